"""Datasets: readers into one index, clips, transforms, batching, synthetic lesion videos."""
