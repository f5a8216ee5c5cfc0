"""A second ROS process for the interface tests: echoes every partglee_ros message type back and serves
the vocabulary services (with no model behind them), so a test can check what crosses the middleware."""

import sys

import rclpy
from partglee_ros.msg import HierarchicalSegmentation, ObjectInstance, ObjectParts, PartInstance, Vocabulary
from rclpy.node import Node

from partglee_ros.ros.vocabulary_services import VocabularyServices
from partglee_ros.runtime.vocabulary import make_vocabulary

ECHOED = {
    "segmentation": HierarchicalSegmentation,
    "object": ObjectInstance,
    "part": PartInstance,
    "object_parts": ObjectParts,
    "vocabulary": Vocabulary,
}


def main() -> None:
    rclpy.init(args=sys.argv)
    node = Node("interface_peer")
    for name, msg_type in ECHOED.items():
        pub = node.create_publisher(msg_type, f"echo/{name}/out", 10)
        node.create_subscription(msg_type, f"echo/{name}/in", pub.publish, 10)
    VocabularyServices(node, make_vocabulary(["mug"], ["handle"]), apply=lambda vocab: None)
    node.get_logger().info("interface peer ready")
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
