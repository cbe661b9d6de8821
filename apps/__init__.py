"""Applications: the command-line interface, batch processing, the live session GUI."""
