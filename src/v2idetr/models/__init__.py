"""Detector building blocks: backbone, deformable attention, transformer, detector, matcher, criterion, post-processing."""
