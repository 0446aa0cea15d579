"""Features: the catalogue, point-in-time SQL over the records, the engines that run it, datasets."""
