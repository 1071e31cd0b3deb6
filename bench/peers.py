"""Peers of the numba engine, each stepping the same program (same weights, same math):

* TunedTorchStep: the fastest eager PyTorch step we could write (issue 13's recipe): every buffer
  preallocated, weight slices and window views precomputed once, a time-major ring (one broadcast
  write per layer, the convolution of all B streams one GEMM), products as addmv / mm / addmm
  with out= (BLAS reads the strided window and the active prefix of Mcat in place), in-place
  elementwise ops, inference_mode, one thread (the caller sets torch.set_num_threads(1)). This is
  the torch peer the targets are measured against.
* TorchStep: the earlier, plainer eager step (ring buffers preallocated, inference_mode, but
  F.linear / matmul / cat allocating every op); kept for comparison only.
* NaiveTorchStep: keep the last L raw inputs and recompute the model's parallel forward over that
  window every step (what one writes without a streaming engine). It is a cost peer only: past L
  it sees a window of L inputs at the model input, not per layer.
* OnnxStep: an ONNX graph of one step built from the program (onnx.helper), run by ONNX Runtime on
  one thread. State is a shift buffer per layer passed in and out (ONNX has no in-place ring
  buffer); one graph per (B, K), since K sets the shapes of the slices. IO binding to preallocated
  buffers (two bindings ping-pong the state), so no per-step feed dict or output allocation.
"""
from __future__ import annotations

import math

import numpy as np


class TunedTorchStep:
    """Fastest eager step: same program, same math as the engine (step head only)."""

    def __init__(self, prog, batch: int, K: int):
        import torch
        cfg = prog.cfg
        if cfg.head == "mean" and cfg.pool_window > 1:
            raise ValueError("TunedTorchStep implements the step head only (head='step' or pool_window=1)")
        self.torch, self.cfg, self.B = torch, cfg, int(batch)
        d, L, Kb, nl, B = cfg.d_model, cfg.seq_len, cfg.k_max, cfg.n_layers, self.B
        self.d, self.L, self.nl = d, L, nl
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        A = prog.arrays
        self.inpW, self.inpb = t(A["inp.W"]), t(A["inp.b"])
        self.ln1 = [(t(A["ln1.g"][l]), t(A["ln1.b"][l])) for l in range(nl)]
        self.phir = [t(A["phir"][l]) for l in range(nl)]                  # (K̄, L), rows contiguous
        self.Mcat = [t(A["Mcat"][l]) for l in range(nl)]                  # (d, (K̄+1)d)
        self.McatT = [m.t().contiguous() for m in self.Mcat]               # ((K̄+1)d, d), for B > 1
        self.gated, self.mlp = bool(cfg.gated), bool(cfg.mlp)
        if self.gated:
            self.W1 = [t(A["W1"][l]) for l in range(nl)]
            self.b1 = [t(A["b1"][l]) for l in range(nl)]
            self.W2 = [t(A["W2"][l]) for l in range(nl)]
            self.b2 = [t(A["b2"][l]) for l in range(nl)]
        if self.mlp:
            self.ln2 = [(t(A["ln2.g"][l]), t(A["ln2.b"][l])) for l in range(nl)]
            self.fc1W = [t(A["fc1.W"][l]) for l in range(nl)]
            self.fc1b = [t(A["fc1.b"][l]) for l in range(nl)]
            self.fc2W = [t(A["fc2.W"][l]) for l in range(nl)]
            self.fc2b = [t(A["fc2.b"][l]) for l in range(nl)]
        self.lnf = (t(A["ln_f.g"]), t(A["ln_f.b"]))
        self.outW, self.outb = t(A["out.W"]), t(A["out.b"])
        # transposed views for addmm (made once; BLAS reads them in place)
        self.inpWT, self.outWT = self.inpW.t(), self.outW.t()
        if self.gated:
            self.W1T = [w.t() for w in self.W1]
        if self.mlp:
            self.fc1WT = [w.t() for w in self.fc1W]
            self.fc2WT = [w.t() for w in self.fc2W]
        self.eps, self.geps = float(cfg.ln_eps), float(cfg.gate_eps)
        # state: a time-major doubled ring (l, 2L, B, d): u(t) is written to rows p and p + L in one
        # broadcast copy, and the window of step t, rows [p+1, p+L] oldest first, is one contiguous
        # (L, B d) matrix, so the convolution of all streams is one GEMM (K, L)·(L, B d)
        self.hist = torch.zeros(nl, 2 * L, B, d)
        self.win = [[self.hist[l, p + 1:p + 1 + L].view(L, B * d) for p in range(L)] for l in range(nl)]
        self.rows = [[self.hist[l, p::L] for p in range(L)] for l in range(nl)]          # (2, B, d)
        self.rows1 = [[r.view(2, d) for r in rs] for rs in self.rows] if B == 1 else None
        # work buffers
        self.h = torch.zeros(B, d)
        self.V = torch.zeros(B, (Kb + 1) * d)                              # [u, α_1 c_1, ..., α_K c_K]
        self.g = torch.zeros(B, cfg.d_gate) if self.gated else None
        self.s = torch.zeros(B, Kb)
        self.a = torch.zeros(B, cfg.mlp_ratio * d) if self.mlp else None
        self.y = torch.zeros(B, cfg.d_out)
        self.h1, self.y1, self.Vu, self.Vu1 = self.h[0], self.y[0], self.V[:, :d], self.V[0, :d]
        self.g1 = self.g[0] if self.gated else None
        self.a1 = self.a[0] if self.mlp else None
        self.p = 0
        self.set_K(K)

    def set_K(self, K: int) -> None:
        """Budget for the next steps: the active-prefix slices and views are made here, not per step."""
        torch, d, B = self.torch, self.d, self.B
        self.K, self.sqrtK = int(K), math.sqrt(K)
        K = self.K
        self.phirK = [f[:K] for f in self.phir]                            # (K, L)
        self.McatK = [m[:, :(K + 1) * d] for m in self.Mcat]                # (d, (K+1)d) strided rows
        self.McatTK = [m[:(K + 1) * d] for m in self.McatT]
        self.VK = self.V[:, :(K + 1) * d]
        self.V1K = self.V[0, :(K + 1) * d]
        self.Vc = self.V[:, d:(K + 1) * d]
        if B == 1:
            self.CT = self.V[0, d:(K + 1) * d].view(K, d)                  # contiguous (K, d) slice of V
        else:
            self.CT = torch.zeros(K, B * d)                                 # c_k of every stream, k-major
            self.CT3 = self.CT.view(K, B, d).transpose(0, 1)                # (B, K, d) view
            self.Vc3 = self.Vc.view(B, K, d)
        if self.gated:
            self.W2K = [w[:K] for w in self.W2]
            self.W2KT = [w.t() for w in self.W2K]
            self.b2K = [b[:K] for b in self.b2]
            self.sK = self.s[:, :K]

    def step(self, x):
        """x (B, d_in) float32 tensor -> y (B, d_out) (a view of the peer's output buffer)."""
        if self.B == 1:
            return self._step1(x)
        torch = self.torch
        F = torch.nn.functional
        B, d, p, K = self.B, self.d, self.p, self.K
        h, V, CT = self.h, self.V, self.CT
        with torch.inference_mode():
            torch.addmm(self.inpb, x, self.inpWT, out=h)
            for l in range(self.nl):
                g1, b1 = self.ln1[l]
                u = F.layer_norm(h, (d,), g1, b1, self.eps)
                self.rows[l][p].copy_(u)                                   # rows p and p + L
                self.Vu.copy_(u)
                torch.mm(self.phirK[l], self.win[l][p], out=CT)            # (K, L)·(L, B d): one GEMM
                if self.gated:
                    torch.addmm(self.b1[l], u, self.W1T[l], out=self.g)
                    s = torch.addmm(self.b2K[l], F.gelu(self.g), self.W2KT[l])
                    nrm = torch.linalg.vector_norm(s, dim=1, keepdim=True).add_(self.geps)
                    s.div_(nrm).mul_(self.sqrtK)
                    torch.mul(self.CT3, torch.softmax(s, dim=1).unsqueeze(2), out=self.Vc3)   # α c into V
                else:
                    self.Vc3.copy_(self.CT3)
                h.addmm_(self.VK, self.McatTK[l])
                if self.mlp:
                    g2, b2 = self.ln2[l]
                    z = F.layer_norm(h, (d,), g2, b2, self.eps)
                    torch.addmm(self.fc1b[l], z, self.fc1WT[l], out=self.a)
                    h.add_(self.fc2b[l]).addmm_(F.gelu(self.a), self.fc2WT[l])
            z = F.layer_norm(h, (d,), self.lnf[0], self.lnf[1], self.eps)
            torch.addmm(self.outb, z, self.outWT, out=self.y)
        self.p = (p + 1) % self.L
        return self.y

    def _step1(self, x):
        """B = 1: 1-D buffers and addmv (GEMV) everywhere; the convolution is one mm into V's slice."""
        torch = self.torch
        F = torch.nn.functional
        d, p = self.d, self.p
        h, CT = self.h1, self.CT
        with torch.inference_mode():
            torch.addmv(self.inpb, self.inpW, x.view(-1), out=h)
            for l in range(self.nl):
                g1, b1 = self.ln1[l]
                u = F.layer_norm(h, (d,), g1, b1, self.eps)
                self.rows1[l][p].copy_(u)                                  # rows p and p + L
                self.Vu1.copy_(u)
                torch.mm(self.phirK[l], self.win[l][p], out=CT)            # (K, L)·(L, d) into V
                if self.gated:
                    torch.addmv(self.b1[l], self.W1[l], u, out=self.g1)
                    s = torch.addmv(self.b2K[l], self.W2K[l], F.gelu(self.g1))
                    s.mul_(self.sqrtK / (float(torch.linalg.vector_norm(s)) + self.geps))
                    CT.mul_(torch.softmax(s, dim=0).unsqueeze(1))
                h.addmv_(self.McatK[l], self.V1K)
                if self.mlp:
                    g2, b2 = self.ln2[l]
                    z = F.layer_norm(h, (d,), g2, b2, self.eps)
                    torch.addmv(self.fc1b[l], self.fc1W[l], z, out=self.a1)
                    h.add_(self.fc2b[l]).addmv_(self.fc2W[l], F.gelu(self.a1))
            z = F.layer_norm(h, (d,), self.lnf[0], self.lnf[1], self.eps)
            torch.addmv(self.outb, self.outW, z, out=self.y1)
        self.p = (p + 1) % self.L
        return self.y


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
    """ONNX Runtime on the step graph, one thread (or `threads` intra-op threads), with IO binding: every input and output is bound
    once to preallocated buffers (two bindings whose state buffers swap roles each step), so a step
    is one copy of x and one run_with_iobinding, with no feed dict or output allocation."""

    def __init__(self, prog, batch: int, K: int, threads: int = 1):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)   # (threads > 1: the same cores as an engine with threads=N)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = build_onnx_step(prog, batch, K)
        self.sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        cfg = prog.cfg
        self.nl = nl = cfg.n_layers
        self.x = np.zeros((batch, cfg.d_in), np.float32)
        self.y = np.zeros((batch, cfg.d_out), np.float32)
        S = [[np.zeros((batch, cfg.d_model, cfg.seq_len), np.float32) for _ in range(nl)] for _ in range(2)]
        self.S = S
        ov = ort.OrtValue.ortvalue_from_numpy
        xo, yo = ov(self.x), ov(self.y)
        self._keep = [xo, yo]
        self.bindings = []
        for par in range(2):
            bd = self.sess.io_binding()
            bd.bind_ortvalue_input("x", xo)
            bd.bind_ortvalue_output("y", yo)
            for l in range(nl):
                si, so_ = ov(S[par][l]), ov(S[1 - par][l])
                self._keep += [si, so_]
                bd.bind_ortvalue_input(f"s{l}", si)
                bd.bind_ortvalue_output(f"o{l}", so_)
            self.bindings.append(bd)
        self.par = 0

    def step(self, x):
        np.copyto(self.x, x)
        self.sess.run_with_iobinding(self.bindings[self.par])
        self.par ^= 1
        return self.y
