"""ros2 launch partglee_ros partglee.launch.py [namespace:=...] [params_file:=...] [image_topic:=...] ...

A thin wrapper: every node parameter is an argument of its own name, and the topic arguments remap the node's
inputs, from the table in partglee_ros/ros/launch_arguments.py (the tests start the equivalent command line,
since `ros2 launch` is not installable from PyPI). A parameter argument given overrides the params file; one
not given leaves the file's value. `dds_profile` is the Fast DDS profile the node runs with
(config/fastdds_large_data.xml unless $FASTDDS_DEFAULT_PROFILES_FILE names one; '' adds none).
`grasp:=true` also starts grasp_node on the node's outputs.
"""

from pathlib import Path
from typing import Any, List  # noqa: UP035 - launch_ros documents typing.List value types

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchContext, LaunchDescription
from partglee_ros.ros.dds_profile import dds_environment, default_dds_profile
from partglee_ros.ros.launch_arguments import (
    ARGUMENTS,
    GRASP_REMAPS,
    description,
    grasp_parameters,
    parameter_values,
    topic_remaps,
    with_grasp_node,
)


def launch_values(parameters: dict[str, Any]) -> dict[str, Any]:
    """Strings and string lists wrapped with their type: older launch_ros versions read a plain string as
    YAML ('y' a bool, '123E5' a double, 'mug: handle' a mapping; launch_ros#410, #384)."""
    kinds = {str: str, list: List[str]}  # noqa: UP006
    return {
        name: ParameterValue(value, value_type=kinds[type(value)]) if type(value) in kinds else value
        for name, value in parameters.items()
    }


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("partglee_ros"))
    arguments = [
        DeclareLaunchArgument(
            "namespace", default_value="", description="namespace of the node and its relative topics"
        ),
        DeclareLaunchArgument("node_name", default_value="partglee", description="node name"),
        DeclareLaunchArgument(
            "params_file",
            default_value=str(share / "config" / "partglee.yaml"),
            description="node parameters ('' = none: the node's declared defaults)",
        ),
        DeclareLaunchArgument(
            "dds_profile",
            default_value=default_dds_profile(),
            description="Fast DDS XML profile of the node processes ('' = none added)",
        ),
        DeclareLaunchArgument(
            "grasp",
            default_value="false",
            choices=["true", "false"],
            description="also start grasp_node on the node's outputs (sets use_depth)",
        ),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value=default, description=description(name))
        for name, (kind, target, default) in ARGUMENTS.items()
    ]

    def node(context: LaunchContext) -> list[Node]:
        """Checked and typed here, so a mistake stops the launch with one line before the node starts."""
        values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
        grasp = LaunchConfiguration("grasp").perform(context) == "true"
        if grasp:
            values = with_grasp_node(values)
        params_file = LaunchConfiguration("params_file").perform(context)
        # one line before anything starts (launch_ros versions differ: some warn and drop the file)
        if params_file and not Path(params_file).is_file():
            raise FileNotFoundError(f"params_file {params_file!r} not found ('' = none)")
        files = [params_file] if params_file else []
        env = dds_environment(LaunchConfiguration("dds_profile").perform(context))
        nodes = [
            Node(
                package="partglee_ros",
                executable="partglee_node",
                name=LaunchConfiguration("node_name"),
                namespace=LaunchConfiguration("namespace"),
                parameters=[*files, launch_values(parameter_values(values))],
                remappings=topic_remaps(values),
                additional_env=env,
                output="screen",
            )
        ]
        if grasp:
            nodes.append(
                Node(
                    package="partglee_ros",
                    executable="grasp_node",
                    namespace=LaunchConfiguration("namespace"),
                    parameters=[*files, launch_values(grasp_parameters(values))],
                    remappings=GRASP_REMAPS,
                    additional_env=env,
                    output="screen",
                )
            )
        return nodes

    return LaunchDescription([*arguments, OpaqueFunction(function=node)])
