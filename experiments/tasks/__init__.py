"""Tasks (a trained model, its data and how to judge it), one module per data set or model family; a space
file names one as ``experiments.tasks.MODULE:ATTRIBUTE``."""
