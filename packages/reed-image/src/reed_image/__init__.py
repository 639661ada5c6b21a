"""reed-image."""
