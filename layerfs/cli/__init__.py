"""The command line: parse, call the layers below, print. No logic of its own."""
