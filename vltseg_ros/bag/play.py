"""`vltseg-ros bag play`: a bag's topics published at real time x `rate`, optionally with
/clock (the bag's header stamps) for nodes on sim time. Raw CDR is published as stored, so
any type whose Python package is built here plays. Also the live replay's publisher.

Publishers are reliable (depth 10): a replay should not lose frames in DDS; the node's own
latest-frame policy then decides what it skips. Large frames need the Fast DDS large-frame
profile, applied before rclpy.init by the callers (`qos.apply_large_frame_profile`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from vltseg_ros.bag import types
from vltseg_ros.bag.read import Bag, BagError

OnPublish = Callable[[str, int, bytes, int], None]  # topic, bag time ns, raw, monotonic ns published


class Player:
    """Publishes `topics` of `bag` from an rclpy `node`; `play()` blocks until the end/stop."""

    def __init__(self, node: Any, bag: Bag, topics: Sequence[str], rate: float = 1.0,
                 clock: bool = False, clock_topic: str | None = None) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if rate <= 0:
            raise BagError(f"rate must be > 0, got {rate}")
        self.node, self.bag, self.rate, self.clock = node, bag, rate, clock
        self.clock_topic = clock_topic
        self.stop = threading.Event()
        self.max_lag_s = 0.0  # how far publishing fell behind real time x rate (a slow reader/machine)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self.pubs: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        for topic in topics:
            try:
                self.pubs[topic] = node.create_publisher(types.message_class(bag.types[topic]), topic, reliable)
            except (ImportError, AttributeError) as exc:
                self.skipped[topic] = f"{bag.types[topic]} is not built here ({exc})"
        self._clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = node.create_publisher(Clock, "/clock", 10)

    def publish_clock(self, stamp_ns: int) -> None:
        if self._clock_pub is not None:
            from rosgraph_msgs.msg import Clock

            self._clock_pub.publish(Clock(clock=types.header_at(stamp_ns).stamp))

    def play(self, on_publish: OnPublish | None = None, first: Callable[[int], None] | None = None) -> int:
        """Publish in bag-time order, paced at `rate`; returns the number of messages sent.
        `first(t0_ns)` runs before the first message (e.g. to start the clock)."""
        sent, start_wall, start_bag = 0, None, None
        for topic, t_ns, raw in self.bag.messages(list(self.pubs)):
            if self.stop.is_set():
                break
            if start_wall is None:
                if first is not None:
                    first(t_ns)
                start_wall, start_bag = time.monotonic(), t_ns
            due = start_wall + (t_ns - start_bag) / 1e9 / self.rate
            if self.stop.wait(max(0.0, due - time.monotonic())):
                break
            self.max_lag_s = max(self.max_lag_s, time.monotonic() - due)
            if self.clock and (self.clock_topic is None or topic == self.clock_topic):
                self.publish_clock(t_ns)
            self.pubs[topic].publish(bytes(raw))
            sent += 1
            if on_publish is not None:
                on_publish(topic, t_ns, raw, time.monotonic_ns())
        return sent


def play_bag(path: str, rate: float = 1.0, clock: bool = False, topics: Sequence[str] | None = None,
             loop: bool = False) -> int:
    """The `bag play` command: its own rclpy context and node; Ctrl-C stops it."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from vltseg_ros import qos

    qos.apply_large_frame_profile()
    context = Context()
    rclpy.init(context=context)
    node = Node("vltseg_bag_play", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    sent = 0
    try:
        with Bag(path) as bag:
            chosen = list(topics) if topics else list(bag.types)
            missing = [t for t in chosen if t not in bag.types]
            if missing:
                raise BagError(f"{path}: no topic(s) {', '.join(missing)}")
            player = Player(node, bag, chosen, rate, clock)
            for topic, why in player.skipped.items():
                print(f"bag play: skipping {topic}: {why}", flush=True)
            print(f"bag play: {path}: {len(player.pubs)} topic(s) at x{rate}" + (" with /clock" if clock else ""),
                  flush=True)
            time.sleep(0.5)  # let subscribers match the new publishers
            while True:
                sent += player.play()
                if not loop or player.stop.is_set():
                    break
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    print(f"bag play: {sent} messages published", flush=True)
    return sent
