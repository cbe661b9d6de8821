"""Applications: the command line (one ``cmd_*`` module per verb: parse, call the library, print)
and the live session window."""
