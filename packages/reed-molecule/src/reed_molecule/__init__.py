"""reed-molecule."""
