"""rsir's model code: encoders, the FTF interaction block, losses, metrics, datasets.

Pure tensor/array computation lives here; nothing in this package imports the service or the builder.
"""
