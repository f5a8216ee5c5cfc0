"""The SetVocabulary / GetVocabulary services, shared by every node that has a vocabulary.

Validation is the runtime's (partglee_ros.runtime.vocabulary); this class only maps requests to it,
applies an accepted vocabulary, numbered by this class, through a callback (Segmenter.apply_vocabulary,
which encodes the text once) and never lets an exception escape into the executor: a bad request gets success=False and
the reason, and the previous vocabulary stays active. `set_vocabulary` is served from a helper node
(service_thread.py): encoding thousands of long names takes seconds (22 s for 2 x 2000 names of 190
characters on 2 CPU cores), and the owner's executor must go on with frames, parameters and `get_vocabulary`
meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rclpy.node import Node

from partglee_ros.ros.conversions import object_parts_from_msgs, vocabulary_to_msg
from partglee_ros.ros.service_thread import ServiceThread
from partglee_ros.runtime.vocabulary import Vocabulary, VocabularyError, make_vocabulary
from partglee_ros.srv import GetVocabulary, SetVocabulary


class VocabularyServices:
    def __init__(
        self,
        node: Node,
        initial: Vocabulary,
        apply: Callable[[Vocabulary], None],
        set_name: str = "set_vocabulary",
        get_name: str = "get_vocabulary",
    ) -> None:
        self._node = node
        self._apply = apply
        # one change at a time (waiting ones in no set order); revisions count up
        self._lock = threading.Lock()
        self.active = initial  # replaced whole, read without the lock
        self._set = ServiceThread(node, SetVocabulary, set_name, self._on_set)
        self._get = node.create_service(GetVocabulary, get_name, self._on_get)
        self._set.start()

    def destroy(self) -> None:
        self._set.destroy()
        self._node.destroy_service(self._get)

    def _on_set(
        self, request: SetVocabulary.Request, response: SetVocabulary.Response
    ) -> SetVocabulary.Response:
        with self._lock:
            try:
                vocab = make_vocabulary(
                    request.objects,
                    request.parts,
                    object_parts_from_msgs(request.object_parts),
                    revision=self.active.revision + 1,
                )
                self._apply(vocab)
            except VocabularyError as err:
                response.success = False
                response.message = f"rejected: {err}; revision {self.active.revision} stays active"
                self._node.get_logger().warning(f"set_vocabulary {response.message}")
            except Exception as err:  # the callback failed for another reason (e.g. text encoder)
                response.success = False
                response.message = (
                    f"failed to apply vocabulary ({type(err).__name__}: {err}); previous stays active"
                )
                self._node.get_logger().error(f"set_vocabulary {response.message}")
            else:
                self.active = vocab
                response.success = True
                response.message = f"applied {vocab.describe()}"
                self._node.get_logger().info(f"set_vocabulary {response.message}")
            response.revision = self.active.revision
            response.vocabulary = vocabulary_to_msg(self.active)
        return response

    def _on_get(
        self, request: GetVocabulary.Request, response: GetVocabulary.Response
    ) -> GetVocabulary.Response:
        response.vocabulary = vocabulary_to_msg(self.active)
        return response
