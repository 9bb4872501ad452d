from mmalign.cli.main import entry

entry()
