"""Training and evaluation data: the built-in synthetic world (``snapgen.data.world``) and loaders."""
