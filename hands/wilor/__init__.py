"""WiLoR hand reconstruction: detector, reconstructor and the official checkpoint format."""
