"""benchmarks/memory.py: its pure helpers and the saved-for-backward count on a small traced graph."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from harness import load_benchmark

mem = load_benchmark("memory")


def test_parse_status_reads_kb_fields_as_bytes():
    text = "Name:\tpython\nVmPeak:\t  999 kB\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\nRssAnon:\t 7 kB\nThreads:\t3\n"
    assert mem.parse_status(text) == {"VmHWM": 2048 * 1024, "VmRSS": 1024 * 1024, "RssAnon": 7 * 1024}
    with pytest.raises(ValueError, match="VmRSS"):
        mem.parse_status("VmRSS:\t 5 MB\n")


def test_process_memory_sees_a_new_buffer():
    mem.reset_peak()
    before = mem.process_memory()
    block = np.ones(64 * 2 ** 20 // 8)          # 64 MiB, touched
    after = mem.process_memory()
    assert after["VmRSS"] - before["VmRSS"] >= 60 * 2 ** 20
    assert after["VmHWM"] >= after["VmRSS"] and after["ru_maxrss"] >= before["VmRSS"] // 2
    del block


def test_parse_env_setting():
    assert mem.parse_env_setting("A=1,B_2=x=y") == {"A": "1", "B_2": "x=y"}
    assert mem.parse_env_setting("default") == {} and mem.parse_env_setting("") == {}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        mem.parse_env_setting("A=1,oops")


def test_increments_are_peaks_over_the_previous_resident_size():
    stages = {"import": {"VmRSS": 100, "VmHWM": 100}, "build": {"VmRSS": 150, "VmHWM": 160},
              "steps": {"VmRSS": 400, "VmHWM": 500}}
    assert mem.increments(stages) == [("import", 100, 100, 100), ("build", 150, 160, 60), ("steps", 400, 500, 350)]


def test_saved_for_backward_counts_the_tensors_the_gradient_reads():
    b, n, h = 4, 5, 6
    w1 = tf.Variable(np.ones((n, h), "float32"))
    w2 = tf.Variable(np.ones((h, 1), "float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            with tf.name_scope("net_1"):
                hidden = tf.tanh(tf.matmul(x, w1))          # Tanh's gradient reads its output (b, h)
            with tf.name_scope("head_1"):
                out = tf.reshape(tf.matmul(hidden, w2), [-1])   # MatMul's kernel gradient reads hidden
            loss = tf.reduce_sum(out)
        return tape.gradient(loss, [w1, w2])

    graph = step.get_concrete_function(tf.TensorSpec((b, n), tf.float32)).graph
    saved = mem.saved_for_backward(graph)
    # One buffer: tanh's output (read by Tanh's gradient and by the second MatMul's gradient), float32;
    # x is the step's input and the kernels are variable reads, neither is counted.
    assert saved == {"net_1": b * h * 4}
