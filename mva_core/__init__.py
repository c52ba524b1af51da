"""MVA pipeline library: multi-value alignment via value decorrelation (HSIC) and extrapolation.

All logic of the Snakemake workflow lives here so it can be imported and tested without Snakemake.
"""
