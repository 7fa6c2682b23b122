"""Run named ablation cells and write the table."""
