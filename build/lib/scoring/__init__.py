"""The runtime scoring artefact: what a trained model is once it leaves training, and where it is kept."""
