"""The model library: a curated catalog (resources/models.json), whether each model fits
this computer and its paired devices, and downloads from the Hugging Face hub."""
