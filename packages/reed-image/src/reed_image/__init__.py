"""reed-image: SiT diffusion with REED guidance (model, interpolants and samplers so far)."""
