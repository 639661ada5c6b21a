"""reed-protein."""
