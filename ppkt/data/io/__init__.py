"""File I/O shared by the readers: images, text matrices, PLY, file fingerprints."""
