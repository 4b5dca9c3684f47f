// A layer's query/key/value projections with their LoRA as one matrix product: the C++ twin of
// paperlib/loraild/qkv_product.py's QkvProduct (torch features, dropout or none), written op for op as
// the Python one, so that the two give the same values from the same random state.  Only the host work
// differs: the eager bf16 step is bound by the host, and this runs the ~40 tensor calls per layer that
// the Python forward and backward make without the Python interpreter (bench/README.md, round 13).
//
//   H_m = A_m dropout_m(x)                 X' = [x | H_q | H_k | H_v]                       [N, d + 3r]
//   [y_q y_k y_v] = X' W'^T + b,           W' = [[W_q, sB_q, 0, 0], [W_k, 0, sB_k, 0], [W_v, 0, 0, sB_v]]
//
// Backward: dX' = dY W' (dx and dH), dW' = dY^T X' (every dW_m and, on its diagonal blocks, dB_m / s),
// dx += sum_m dropout_m^T(dH_m A_m), dA_m = dH_m^T dropout_m(x); every parameter gradient contiguous in
// its parameter's dtype.
#include <torch/extension.h>

#include <string>
#include <vector>

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  if (name == "float32") return at::kFloat;
  if (name == "float64") return at::kDouble;
  TORCH_CHECK(false, "qkv product: unsupported compute dtype ", name);
}

// t contiguous in dtype: t itself when it already is, else one copy (as the Python _stored).
Tensor stored(const Tensor& t, at::ScalarType dtype) {
  if (t.scalar_type() == dtype && t.is_contiguous()) return t;
  return at::empty(t.sizes(), t.options().dtype(dtype)).copy_(t);
}

// out = t * scale written into out of any dtype (computed as torch.mul(t, scale, out=out) from Python does:
// the scale a wrapped number, so t's dtype decides the arithmetic and out's the storage).
void scaled_into(Tensor& out, const Tensor& t, double scale) {
  Tensor s = at::scalar_tensor(scale, at::kDouble);
  s.unsafeGetTensorImpl()->set_wrapped_number(true);
  at::mul_out(out, t, s);
}

// The [3, rows, r] view of the diagonal blocks of a fresh contiguous [3 rows, d + 3r] tensor's LoRA columns.
Tensor diagonal_blocks(const Tensor& wide, int64_t rows, int64_t d, int64_t r) {
  const int64_t k = d + 3 * r;
  return wide.as_strided({3, rows, r}, {rows * k + r, k, 1}, d);
}

struct QkvLora : public torch::autograd::Function<QkvLora> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& w_q, const Tensor& b_q,
                               const Tensor& w_k, const Tensor& b_k, const Tensor& w_v, const Tensor& b_v,
                               const Tensor& a_q, const Tensor& a_k, const Tensor& a_v, const Tensor& bl_q,
                               const Tensor& bl_k, const Tensor& bl_v, double p, double scale,
                               const std::string& dtype_name) {
    const at::ScalarType dtype = parse_dtype(dtype_name);
    std::vector<int64_t> lead(x.sizes().begin(), x.sizes().end() - 1);
    const int64_t d = x.size(-1);
    const Tensor x2 = x.reshape({-1, d});
    const int64_t n = x2.size(0);
    const int64_t r = a_q.size(0);
    const int64_t k = d + 3 * r;
    const auto opts = x.options().dtype(dtype);
    const bool drop = p > 0;

    Tensor xc = at::empty({n, k}, opts);  // X' = [x | H]
    Tensor xd = xc.narrow(1, 0, d);
    // the one cast of the layer input; dropout reads a contiguous copy (xd is strided)
    const Tensor xb = drop ? stored(x2, dtype) : x2;
    xd.copy_(xb);
    const std::vector<int64_t> rows = {w_q.size(0), w_k.size(0), w_v.size(0)};
    const int64_t total = rows[0] + rows[1] + rows[2];
    // A [3, r, d] and the biases side by side, views of one buffer written by one multi-tensor copy
    // (_lora_a_and_bias: one kernel for the six casts)
    Tensor ab = at::empty({3 * r * d + total}, opts);
    // (views made in as few calls as the step allows: each is a call the host makes, on every layer, every step)
    Tensor a = ab.as_strided({3, r, d}, {r * d, d, 1}, 0);
    Tensor bias = ab.as_strided({total}, {1}, 3 * r * d);
    std::vector<Tensor> pieces = a.unbind(0);
    for (const Tensor& b : bias.split_with_sizes(rows, 0)) pieces.push_back(b);
    at::_foreach_copy_(pieces, {a_q, a_k, a_v, b_q, b_k, b_v});
    Tensor h = xc.as_strided({3, n, r}, {r, k, 1}, d);
    Tensor xs[3], mask[3];
    if (drop) {
      // three independent masks drawn one after another, query, key, value (three_dropouts)
      for (int m = 0; m < 3; ++m) std::tie(xs[m], mask[m]) = at::native_dropout(xb, p, true);
      std::vector<Tensor> hs = h.unbind(0), at_ = a.transpose(1, 2).unbind(0);
      for (int m = 0; m < 3; ++m) at::mm_out(hs[m], xs[m], at_[m]);
    } else {
      Tensor xh = xc.narrow(1, d, 3 * r);
      at::mm_out(xh, xd, a.view({3 * r, d}).t());
    }
    Tensor wc = at::empty({total, k}, opts);  // W'
    Tensor wd = wc.narrow(1, 0, d);
    at::cat_out(wd, {w_q, w_k, w_v}, 0);
    wc.narrow(1, d, 3 * r).zero_();
    if (rows[0] == rows[1] && rows[1] == rows[2]) {
      Tensor diag = diagonal_blocks(wc, rows[0], d, r);
      scaled_into(diag, at::stack({bl_q, bl_k, bl_v}), scale);
    } else {
      const Tensor bls[3] = {bl_q, bl_k, bl_v};
      int64_t off = 0;
      for (int m = 0; m < 3; ++m) {
        Tensor block = wc.narrow(0, off, rows[m]).narrow(1, d + m * r, r);
        scaled_into(block, bls[m], scale);
        off += rows[m];
      }
    }
    Tensor y = at::addmm(bias, xc, wc.t());
    std::vector<int64_t> shape = lead;
    shape.push_back(total);
    auto outs = y.view(shape).split_with_sizes(rows, -1);

    ctx->save_for_backward({xc, wc, a, xs[0], xs[1], xs[2], mask[0], mask[1], mask[2]});
    // the settings backward reads, as one list of integers and one of doubles (two entries, not thirteen):
    // d, r, the three rows, the dtypes of the arithmetic, x, W, b, A and B, whether dropout acts, then x's
    // leading shape
    std::vector<int64_t> meta = {d, r, rows[0], rows[1], rows[2], static_cast<int64_t>(dtype),
                                 static_cast<int64_t>(x.scalar_type()), static_cast<int64_t>(w_q.scalar_type()),
                                 static_cast<int64_t>(b_q.scalar_type()), static_cast<int64_t>(a_q.scalar_type()),
                                 static_cast<int64_t>(bl_q.scalar_type()), drop ? 1 : 0};
    meta.insert(meta.end(), lead.begin(), lead.end());
    ctx->saved_data["meta"] = meta;
    ctx->saved_data["p_scale"] = std::vector<double>{p, scale};
    return {outs[0], outs[1], outs[2], h};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor& xc = saved[0];
    const Tensor& wc = saved[1];
    const Tensor& a = saved[2];
    const Tensor xs[3] = {saved[3], saved[4], saved[5]};
    const Tensor mask[3] = {saved[6], saved[7], saved[8]};
    const auto meta = ctx->saved_data["meta"].toIntVector();
    const auto p_scale = ctx->saved_data["p_scale"].toDoubleVector();
    const int64_t d = meta[0];
    const int64_t r = meta[1];
    const std::vector<int64_t> rows = {meta[2], meta[3], meta[4]};
    const auto dtype = static_cast<at::ScalarType>(meta[5]);
    const auto x_dtype = static_cast<at::ScalarType>(meta[6]);
    const auto w_dtype = static_cast<at::ScalarType>(meta[7]);
    const auto b_dtype = static_cast<at::ScalarType>(meta[8]);
    const auto a_dtype = static_cast<at::ScalarType>(meta[9]);
    const auto bl_dtype = static_cast<at::ScalarType>(meta[10]);
    const bool drop = meta[11] != 0;
    const std::vector<int64_t> lead(meta.begin() + 12, meta.end());
    const double p = p_scale[0];
    const double scale = p_scale[1];
    const int64_t n = xc.size(0);
    const int64_t k = d + 3 * r;
    const int64_t total = rows[0] + rows[1] + rows[2];

    std::vector<Tensor> gy;
    for (int m = 0; m < 3; ++m) {
      gy.push_back(grads[m].defined() ? grads[m].reshape({n, rows[m]})
                                      : at::zeros({n, rows[m]}, xc.options()));
    }
    Tensor g = at::cat(gy, 1);  // dY [N, d_q + d_k + d_v]
    if (g.scalar_type() != dtype) g = g.to(dtype);
    const Tensor dxc = at::mm(g, wc);  // dx and dL/dH
    const Tensor dwc = at::mm(g.t(), xc);  // every dW and dL/d(sB)
    auto dw = stored(dwc.narrow(1, 0, d), w_dtype).split_with_sizes(rows, 0);
    std::vector<Tensor> dbl(3);
    if (rows[0] == rows[1] && rows[1] == rows[2]) {
      Tensor out = at::empty({3, rows[0], r}, dwc.options().dtype(bl_dtype));
      scaled_into(out, diagonal_blocks(dwc, rows[0], d, r), scale);
      auto pieces = out.unbind(0);
      for (int m = 0; m < 3; ++m) dbl[m] = pieces[m];
    } else {
      int64_t off = 0;
      for (int m = 0; m < 3; ++m) {
        Tensor out = at::empty({rows[m], r}, dwc.options().dtype(bl_dtype));
        scaled_into(out, dwc.narrow(0, off, rows[m]).narrow(1, d + m * r, r), scale);
        dbl[m] = out;
        off += rows[m];
      }
    }
    auto db = at::sum(g, {0}, false, b_dtype).split_with_sizes(rows, 0);

    const Tensor xd = xc.narrow(1, 0, d);
    Tensor dh = dxc.as_strided({3, n, r}, {r, k, 1}, d);  // dL/dH from the product, [3, N, r]
    if (grads[3].defined()) dh = at::add(dh, grads[3].scalar_type() == dtype ? grads[3] : grads[3].to(dtype));
    Tensor dx_a, da;
    if (drop) {
      // sum_m dropout_m^T(dH_m A_m), summed in place into the first term (_dropped_sum)
      const Tensor t = at::bmm(dh, a);
      const double keep = 1.0 / (1.0 - p);
      const std::vector<Tensor> ts = t.unbind(0);
      dx_a = at::native_dropout_backward(ts[0], mask[0], keep);
      for (int m = 1; m < 3; ++m) dx_a.add_(at::native_dropout_backward(ts[m], mask[m], keep));
      da = at::empty({3, r, d}, xc.options());
      std::vector<Tensor> das = da.unbind(0), dhs = dh.transpose(1, 2).unbind(0);
      for (int m = 0; m < 3; ++m) at::mm_out(das[m], dhs[m], xs[m]);
    } else {
      const Tensor dh_flat = dh.transpose(0, 1).reshape({n, 3 * r});
      dx_a = at::mm(dh_flat, a.view({3 * r, d}));
      da = at::mm(dh_flat.t(), xd).view({3, r, d});
    }
    auto da_pieces = stored(da, a_dtype).unbind(0);
    Tensor dx = at::empty({n, d}, dxc.options().dtype(x_dtype));
    at::add_out(dx, dxc.narrow(1, 0, d), dx_a);
    std::vector<int64_t> xshape = lead;
    xshape.push_back(d);

    variable_list out(16);
    out[0] = dx.view(xshape);
    for (int m = 0; m < 3; ++m) {
      out[1 + 2 * m] = dw[m];
      out[2 + 2 * m] = db[m];
      out[7 + m] = da_pieces[m];
      out[10 + m] = dbl[m];
    }
    for (size_t i = 0; i < 13; ++i) {
      if (!ctx->needs_input_grad(i)) out[i] = Tensor();
    }
    return out;  // p, scale, dtype: no gradient
  }
};

std::vector<Tensor> qkv_lora(const Tensor& x, const Tensor& w_q, const Tensor& b_q, const Tensor& w_k,
                             const Tensor& b_k, const Tensor& w_v, const Tensor& b_v, const Tensor& a_q,
                             const Tensor& a_k, const Tensor& a_v, const Tensor& bl_q, const Tensor& bl_k,
                             const Tensor& bl_v, double p, double scale, const std::string& dtype) {
  return QkvLora::apply(x, w_q, b_q, w_k, b_k, w_v, b_v, a_q, a_k, a_v, bl_q, bl_k, bl_v, p, scale, dtype);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("qkv_lora", &qkv_lora,
        "(y_q, y_k, y_v, H): a layer's q/k/v projections with LoRA as one product (paperlib.loraild.qkv_product)");
}
