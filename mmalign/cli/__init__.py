"""The thin ``mmalign`` command line: parse, load config, call one recipe, print a summary."""
