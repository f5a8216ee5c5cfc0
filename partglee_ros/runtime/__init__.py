"""The Segmenter runtime: image + active vocabulary -> objects with parts. No ROS imports."""
