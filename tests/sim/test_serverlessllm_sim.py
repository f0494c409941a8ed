"""`sllmsim run --scheduler serverlessllm`: the reference's decisions driving the simulator."""

from __future__ import annotations

from repo_paths import TRACES
from simtoy import model, node, req, toy_trace

from sllmsim.cli import main
from sllmsim.sim import simulate

SPEC_LOG = [
    "Sorted scheduling options: [('0', 0.9877967834472656)]",
    "Allocated node 0 for model opt-2.7b",
    "Sorted scheduling options: [('1', 0.4901580810546875)]",
    "Allocated node 1 for model opt-1.3b",
]


def test_sllmsim_run_with_the_serverlessllm_policy_logs_the_spec_lines(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(TRACES / "seed-example.yaml"), "--out", str(out), "--no-plots",
                 "--scheduler", "serverlessllm"]) == 0
    assert "seed-example (serverlessllm)" in capsys.readouterr().out
    assert (out / "scheduler.log").read_text().splitlines() == SPEC_LOG
    assert "placement: serverlessllm" in (out / "resolved_config.yaml").read_text()


def test_a_cached_copy_behind_a_busy_queue_wins_only_under_serverlessllm():
    # Node 1 holds a's checkpoint in host memory, but b's disk load (2 s) queues ahead of it; node 0
    # has a on disk only. storage_aware adds the queue (node 0: 1 s from disk wins); the reference,
    # and serverlessllm, price node 1's host copy without the queue.
    nodes = [node(num_gpus=2), node(num_gpus=2)]
    models = [model("a", "2GB", placement_config={"local_disk": ["0"], "host_memory": ["1"]}),
              model("b", "4GB", placement_config={"local_disk": ["1"], "target_nodes": ["1"]})]
    requests = [req(0.0, "b"), req(0.0, "a")]
    placed = {}
    for policy in ("storage_aware", "serverlessllm"):
        result = simulate(toy_trace(nodes, models, requests, scheduler=policy))
        placed[policy] = {r.model: (r.node, r.tier) for r in result.requests}
        assert all(r.status == "completed" for r in result.requests)
    assert placed["storage_aware"]["a"] == ("0", "disk")
    assert placed["serverlessllm"]["a"] == ("1", "host")
    assert placed["storage_aware"]["b"] == placed["serverlessllm"]["b"] == ("1", "disk")


def test_without_a_local_copy_on_an_allowed_node_serverlessllm_never_places_as_the_reference():
    # The checkpoint is on node 0's disk only, and target_nodes allows node 1 only. storage_aware
    # downloads it to node 1; serverlessllm (like 0.8.0's schedule(), which considers local copies
    # only) has no option, so the request is still waiting when the simulation ends.
    trace_args = ([node(), node()], [model("a", "2GB", placement_config={"local_disk": ["0"], "target_nodes": ["1"]})],
                  [req(0.0, "a")])
    downloaded = simulate(toy_trace(*trace_args, scheduler="storage_aware")).requests
    assert [(r.status, r.node, r.tier) for r in downloaded] == [("completed", "1", "network")]
    result = simulate(toy_trace(*trace_args, scheduler="serverlessllm"))
    assert [r.status for r in result.requests] == ["failed"]
    assert result.scheduler_log == ["Sorted scheduling options: []",
                                    "No node can host model a now (needs 1 free GPUs)"]
