"""Job media: input files into ComfyUI before submit, output files delivered after it."""
