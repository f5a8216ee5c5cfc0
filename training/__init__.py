"""Training, data and evaluation for PartGLEE; runs without ROS."""
