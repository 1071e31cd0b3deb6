"""Peers of the numba engine, each stepping the same program (same weights, same math):

* TorchStep: a well-written PyTorch eager step (ring buffers preallocated, inference_mode, the
  caller sets one thread), reading the program's precomputed layout.
* NaiveTorchStep: keep the last L raw inputs and recompute the model's parallel forward over that
  window every step (what one writes without a streaming engine). It is a cost peer only: past L
  it sees a window of L inputs at the model input, not per layer.
* OnnxStep: an ONNX graph of one step built from the program (onnx.helper), run by ONNX Runtime on
  one thread. State is a shift buffer per layer passed in and out (ONNX has no in-place ring
  buffer); one graph per (B, K), since K sets the shapes of the slices.
"""
from __future__ import annotations

import math

import numpy as np


class TorchStep:
    def __init__(self, prog, batch: int, K: int):
        import torch
        self.torch = torch
        cfg = prog.cfg
        self.cfg, self.B, self.K = cfg, batch, K
        self.d, self.L = cfg.d_model, cfg.seq_len
        A = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in prog.arrays.items()}
        d, Kb = self.d, cfg.k_max
        self.A = A
        # Mcat^T, (nl, (K̄+1)d, d): the rows of the active prefix are contiguous
        self.MT = A["Mcat"].transpose(1, 2).contiguous()
        self.hist = torch.zeros(cfg.n_layers, batch, d, 2 * self.L)
        self.p = 0
        self.sqrtK = math.sqrt(K)

    def set_K(self, K):
        self.K, self.sqrtK = K, math.sqrt(K)

    def step(self, x):
        torch, F = self.torch, self.torch.nn.functional
        A, cfg, K, d, L, p = self.A, self.cfg, self.K, self.d, self.L, self.p
        with torch.inference_mode():
            h = F.linear(x, A["inp.W"], A["inp.b"])
            for l in range(cfg.n_layers):
                u = F.layer_norm(h, (d,), A["ln1.g"][l], A["ln1.b"][l], cfg.ln_eps)
                hl = self.hist[l]
                hl[:, :, p] = u
                hl[:, :, p + L] = u
                C = torch.matmul(hl[:, :, p + 1:p + 1 + L], A["phir"][l, :K].T)        # (B, d, K)
                if cfg.gated:
                    s = F.linear(F.gelu(F.linear(u, A["W1"][l], A["b1"][l])), A["W2"][l, :K], A["b2"][l, :K])
                    s = s * (self.sqrtK / (torch.linalg.vector_norm(s, dim=-1, keepdim=True) + cfg.gate_eps))
                    C = C * torch.softmax(s, dim=-1)[:, None, :]
                V = torch.cat([u, C.transpose(1, 2).reshape(u.shape[0], K * d)], dim=1)
                h = h + torch.matmul(V, self.MT[l, :(K + 1) * d])
                if cfg.mlp:
                    z = F.layer_norm(h, (d,), A["ln2.g"][l], A["ln2.b"][l], cfg.ln_eps)
                    h = h + F.linear(F.gelu(F.linear(z, A["fc1.W"][l], A["fc1.b"][l])), A["fc2.W"][l], A["fc2.b"][l])
            y = F.linear(F.layer_norm(h, (d,), A["ln_f.g"], A["ln_f.b"], cfg.ln_eps), A["out.W"], A["out.b"])
        self.p = (p + 1) % L
        return y


class NaiveTorchStep:
    def __init__(self, model, batch: int, K: int):
        import torch
        self.torch, self.model, self.K = torch, model.float().eval(), K
        self.buf = torch.zeros(batch, model.cfg.seq_len, model.cfg.d_in)
        self.n = 0

    def step(self, x):
        torch = self.torch
        with torch.inference_mode():
            self.buf = torch.roll(self.buf, -1, dims=1)
            self.buf[:, -1] = x
            self.n = min(self.n + 1, self.buf.shape[1])
            return self.model(self.buf[:, -self.n:], self.K)[:, -1]


def build_onnx_step(prog, batch: int, K: int):
    """ModelProto of one step: inputs x (B, d_in), s0..s{n-1} (B, d, L); outputs y, new states."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    cfg = prog.cfg
    d, L, B, nl = cfg.d_model, cfg.seq_len, batch, cfg.n_layers
    A = prog.arrays
    nodes, inits = [], []
    cnt = [0]

    def name(base):
        cnt[0] += 1
        return f"{base}_{cnt[0]}"

    def const(arr, base="c"):
        n = name(base)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32) if np.asarray(arr).dtype.kind == "f"
                                             else np.ascontiguousarray(arr), n))
        return n

    def op(t, ins, base="t", **kw):
        out = name(base)
        nodes.append(helper.make_node(t, ins, [out], **kw))
        return out

    def linear(x, W, b=None):                  # x @ W.T + b
        y = op("MatMul", [x, const(W.T)])
        return op("Add", [y, const(b)]) if b is not None else y

    def gelu(x):
        e = op("Erf", [op("Mul", [x, const(np.float32(1 / math.sqrt(2)))])])
        return op("Mul", [op("Mul", [x, const(np.float32(0.5))]), op("Add", [e, const(np.float32(1.0))])])

    def ln(x, g, b):
        return op("LayerNormalization", [x, const(g), const(b)], axis=-1, epsilon=cfg.ln_eps)

    h = linear("x", A["inp.W"], A["inp.b"])
    outs_state = []
    one = const(np.array([1], np.int64))
    Lc = const(np.array([L], np.int64))
    ax2 = const(np.array([2], np.int64))
    for l in range(nl):
        u = ln(h, A["ln1.g"][l], A["ln1.b"][l])
        shifted = op("Slice", [f"s{l}", one, Lc, ax2])
        win = op("Concat", [shifted, op("Unsqueeze", [u, ax2])], axis=2)           # (B, d, L) new state
        nodes.append(helper.make_node("Identity", [win], [f"o{l}"]))
        outs_state.append(f"o{l}")
        C = op("MatMul", [win, const(A["phir"][l, :K].T)])                       # (B, d, K)
        if cfg.gated:
            s = linear(gelu(linear(u, A["W1"][l], A["b1"][l])), A["W2"][l, :K], A["b2"][l, :K])
            nrm = op("Sqrt", [op("ReduceSumSquare", [s, const(np.array([-1], np.int64))], keepdims=1)])
            st = op("Div", [op("Mul", [s, const(np.float32(math.sqrt(K)))]),
                            op("Add", [nrm, const(np.float32(cfg.gate_eps))])])
            alpha = op("Softmax", [st], axis=-1)
            C = op("Mul", [C, op("Unsqueeze", [alpha, one])])
        V = op("Concat", [u, op("Reshape", [op("Transpose", [C], perm=[0, 2, 1]),
                                            const(np.array([B, K * d], np.int64))])], axis=1)
        h = op("Add", [h, op("MatMul", [V, const(A["Mcat"][l][:, :(K + 1) * d].T)])])
        if cfg.mlp:
            z = ln(h, A["ln2.g"][l], A["ln2.b"][l])
            h = op("Add", [h, linear(gelu(linear(z, A["fc1.W"][l], A["fc1.b"][l])), A["fc2.W"][l], A["fc2.b"][l])])
    y = linear(ln(h, A["ln_f.g"], A["ln_f.b"]), A["out.W"], A["out.b"])
    nodes.append(helper.make_node("Identity", [y], ["y"]))
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("x", f32, [B, cfg.d_in])] + \
             [helper.make_tensor_value_info(f"s{l}", f32, [B, d, L]) for l in range(nl)]
    outputs = [helper.make_tensor_value_info("y", f32, [B, cfg.d_out])] + \
              [helper.make_tensor_value_info(f"o{l}", f32, [B, d, L]) for l in range(nl)]
    graph = helper.make_graph(nodes, "essm_step", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class OnnxStep:
    def __init__(self, prog, batch: int, K: int):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = build_onnx_step(prog, batch, K)
        self.sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        cfg = prog.cfg
        self.nl = cfg.n_layers
        self.feeds = {f"s{l}": np.zeros((batch, cfg.d_model, cfg.seq_len), np.float32) for l in range(self.nl)}
        self.out_names = ["y"] + [f"o{l}" for l in range(self.nl)]

    def step(self, x):
        self.feeds["x"] = x
        res = self.sess.run(self.out_names, self.feeds)
        for l in range(self.nl):
            self.feeds[f"s{l}"] = res[1 + l]
        return res[0]
