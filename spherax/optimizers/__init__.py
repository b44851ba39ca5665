"""The named optimizers of the papers and their peers, as compositions of transforms."""
