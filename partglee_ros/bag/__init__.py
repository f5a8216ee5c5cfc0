"""Evaluate the segmenter on recorded rosbag2 bags (mcap or sqlite3), offline or by replay into a live node.

Reading and writing bags uses the `rosbags` library only, so the offline path needs no ROS installation;
only `replay` imports rclpy. Entry points: `python -m partglee_ros.bag.evaluate` (console script
`partglee-bag-eval`) and `python -m partglee_ros.bag.make_sample`.
"""
