"""Tasks (models + data) and benchmark scripts. Models are hand-written: torchvision does not import here."""
