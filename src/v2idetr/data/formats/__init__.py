"""Readers for dataset layouts on disk (COCO-VID, BUV, SUN, image folders, video files)."""
