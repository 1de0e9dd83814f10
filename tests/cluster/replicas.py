"""Every stream and durable consumer pixq creates on a 3-node cluster has 3 replicas, one on
each node. Checked at the start of the SIGKILL test (tests/cluster/test_node_faults.py), whose
processes created them with NATS_STREAM_REPLICAS=3, so no stack is started twice."""

import nats

from pixq import names
from tests.nats_cluster import PIXQ_STREAMS, NatsCluster

DURABLES = {names.JOBS_STREAM: [names.WORKERS_CONSUMER, names.BATCH_WORKERS_CONSUMER],
            names.ADVISORY_STREAM: [names.ADVISORY_CONSUMER], names.STATUS_STREAM: [names.STATUS_CONSUMER],
            names.EVENTS_STREAM: [names.WEBHOOKS_CONSUMER], names.INGEST_STREAM: [names.INGEST_CONSUMER]}
"""The durable consumers a worker creates (pixq.queue.ensure_worker_consumers)."""


async def assert_three_replicas(cluster: NatsCluster) -> None:
    nodes = {node.name for node in cluster.nodes}
    for stream in PIXQ_STREAMS:
        info = await cluster.stream_info(stream)
        assert info is not None, f"{stream} unreadable\n{cluster.log_tails()}"
        assert info.config.num_replicas == 3, (stream, info.config.num_replicas)
        peers = {info.cluster.leader, *(peer.name for peer in info.cluster.replicas or [])}
        assert peers == nodes, (stream, info.cluster)
    node = next(node for node in cluster.nodes if node.answering)
    nc = await nats.connect(node.url)
    try:
        js = nc.jetstream()
        for stream, durables in DURABLES.items():
            for durable in durables:
                info = await js.consumer_info(stream, durable)
                # 0 means "as many as the stream": the consumer's own Raft group spans the stream's peers.
                assert info.config.num_replicas in (0, 3), (durable, info.config.num_replicas)
                peers = {info.cluster.leader, *(peer.name for peer in info.cluster.replicas or [])}
                assert peers == nodes, (durable, info.cluster)
    finally:
        await nc.close()
