// The fused post-LN block of rmaat_model/fused_block.py (block_forward and FusedBlock.backward,
// with kernels.astro_forward / astro_backward inside them), in C++: the same ATen operators in
// the same order with the same operands, so every value and gradient is bitwise the Python
// path's (tests/rmaat_model/test_native.py). What it saves is the interpreter between the
// operators: a block forward issues about forty of them, its backward about sixty, and each
// costs about a microsecond of Python around its dispatch.
//
// Full-precision dtypes only (float32, float64, every tensor one dtype); mixed precision and
// torch.compile take the Python path (rmaat_model/native.py decides).
//
// Where a chain of elementwise operators made one pass over memory each (phi's five, the
// dropout mask's four, a mask times a gradient after a clamp), a loop below makes one pass for
// the chain on the CPU. Each is exact: the same IEEE operations (min, max, *, +, a comparison)
// in the operators' order, every result rounded to the dtype as theirs is, with no multiply-add
// contracted into one rounding (native.py compiles with -ffp-contract=off) and the operators'
// choice of operand where min or max meet a signed zero or a NaN; so the bits are still the
// Python path's (a NaN's sign and payload bits aside, which ATen's own vector and scalar loops
// already set differently). Transcendentals (exp2, GELU), reductions and products stay ATen's: their
// rounding depends on the vector code and summation order ATen picks. The exceptions are the
// attention's products per head, made in a loop of ours, two linear maps' biases, added by the
// loop that reads the product next (checked products), phi's exponential (phi by rows) and the
// normaliser's gradient with its sum over each head's rows, each only where it has been seen to
// give ATen's bits (a check once per shape or layout and ATen state, below). Off the CPU, or for
// a layout a loop does not take, the operators run as in Python. The segment's window
// (model.RMAAT.step's embedding, position, mask and memory rows) is here too, with its node.

#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/extension.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/ExpandUtils.h>
#include <ATen/core/MT19937RNGEngine.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

using at::Tensor;
using OptTensor = std::optional<Tensor>;

namespace rmaat {

constexpr double kLog2e = 1.4426950408889634;  // math.log2(math.e), as kernels.LOG2E

// kernels.scalar: a cached 0-dim tensor, created outside inference mode. The Python path
// multiplies by such tensors, not by numbers; the same operands here give the same kernels.
const Tensor& scalar(double value, at::ScalarType dtype) {
  thread_local std::map<std::pair<double, int>, Tensor> cache;
  auto key = std::make_pair(value, static_cast<int>(dtype));
  auto it = cache.find(key);
  if (it == cache.end()) {
    c10::InferenceMode off(false);
    it = cache.emplace(key, at::scalar_tensor(value, at::TensorOptions().dtype(dtype))).first;
  }
  return it->second;
}

// ---------------------------------------------------------------- exact fused loops (CPU)

// min and max as ATen's clamp_max / clamp_min kernels take them: x itself where x is a NaN or
// where x and the bound compare equal (a signed zero keeps its sign)
template <typename T>
inline T min_keep(T x, T bound) { return x > bound ? bound : x; }
template <typename T>
inline T max_keep(T x, T bound) { return x < bound ? bound : x; }

// Whether a loop below takes t: on the CPU, three dimensions, the last one contiguous, of
// dtype dt.
bool rows_ok(const Tensor& t, at::ScalarType dt) {
  return t.is_cpu() && t.dim() == 3 && (t.stride(2) == 1 || t.size(2) == 1) && t.scalar_type() == dt;
}

// Whether t's elements lie in row-major order (dims of size 1 aside, no stride 0): then ATen
// gives an operator's fresh output on t the contiguous layout the loops write, and an
// operator whose bits depend on an element's place in memory (exp2_'s vector body and scalar
// tail differ in the last bit) sees every element where it saw it before.
bool row_major(const Tensor& t) {
  int64_t inner = 1;   // the span of the dims after this one
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (t.stride(d) < inner) return false;
    inner = t.stride(d) * t.size(d);
  }
  return true;
}

// Whether dst can be written by the loops' threads without two of them writing one element
// (ATen's out= operators refuse such a dst). ATen answers "too hard to tell" for any layout
// with gaps, such as the rows of the gradient's Q, K or V part that astro_backward writes; a
// layout in row-major order has no two elements in one place.
bool writable(const Tensor& dst) {
  return at::has_internal_overlap(dst) == at::MemOverlap::No || row_major(dst);
}

// f(b, r) for every row of a (B, R, C) shape, rows split among ATen's intra-op threads.
template <typename F>
void each_row(int64_t B, int64_t R, int64_t C, const F& f) {
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(C, 1));
  at::parallel_for(0, B * R, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) f(i / R, i % R);
  });
}

// Row r of batch b of a tensor that rows_ok takes.
template <typename T>
struct Rows {
  T* p;
  int64_t s0, s1;
  explicit Rows(const Tensor& t) : p(t.data_ptr<T>()), s0(t.stride(0)), s1(t.stride(1)) {}
  T* operator()(int64_t b, int64_t r) const { return p + b * s0 + r * s1; }
};

// One row of phi_kernel_a's float32 loops in one pass, the exponential as ATen's exp2_ gives it
// where the row's first `body` elements fall in exp2_'s vector body; and whether that is exact
// now for a fresh contiguous tensor of n elements (phi by rows, below).
bool phi_rows_take(int64_t n);
template <bool kB, bool kM, bool kA>
void phi_row(const float* x, float br, const float* mk, const float* pr, float* y, float* a, int64_t C,
             int64_t body);

// phi_row for a dtype's rows: float32 only (phi_kernel_a takes it for float32 alone)
template <bool kB, bool kM, bool kA, typename T>
void phi_row_of(const T* x, T br, const T* mk, const T* pr, T* y, T* a, int64_t C, int64_t body) {
  if constexpr (std::is_same_v<T, float>)
    phi_row<kB, kM, kA>(x, br, mk, pr, y, a, C, body);
  else
    TORCH_CHECK(false, "phi_row: float32 only");
}

// kernels.phi_kernel: exp(min(x, 0)) + max(x, 0), the exponential as exp2 of x log2(e); with
// mask (B, 1, W) given, times the mask (astro_forward's fkT.mul_(mask)); with phi_rT (m, W)
// given too, also that plus phi(R) (astro_forward's aT = fkT + phi_rT, row r of x taking row
// r mod m), returned second. Two loops around ATen's exponential: min(x, 0) * log2(e) into a
// fresh contiguous tensor, then that + max(x, 0) (times the mask; and plus phi(R) into aT) in
// place, with exp2_ over the tensor between them; or, for float32 where phi_rows_take says that
// gives the same bits (phi by rows, below), the three in one pass over each row (phi_row).
// m: the head size, phi_rT's row count (read with phi_rT only). With bias (R) given, x is
// x + bias (row r of x plus bias[r], rounded, as ATen's add), the projection's bias that
// block_forward leaves to this loop (checked products, below).
std::pair<Tensor, Tensor> phi_kernel_a(const Tensor& x, const OptTensor& mask, const OptTensor& phi_rT,
                                       int64_t m = 1, const OptTensor& bias = std::nullopt) {
  TORCH_CHECK(!phi_rT || m > 0, "phi_kernel_a: the head size m must be positive, got ", m);
  const auto dt = x.scalar_type();
  const bool fused = rows_ok(x, dt) && row_major(x) &&
                     (!mask || (rows_ok(*mask, dt) && mask->size(0) == x.size(0) && mask->size(1) == 1 &&
                                mask->size(2) == x.size(2))) &&
                     (!phi_rT || (phi_rT->is_cpu() && phi_rT->scalar_type() == dt && phi_rT->dim() == 2 &&
                                  phi_rT->stride(1) == 1 && m > 0 && phi_rT->size(0) == m &&
                                  phi_rT->size(1) == x.size(2) && x.size(1) % m == 0)) &&
                     (!bias || (bias->is_cpu() && bias->scalar_type() == dt && bias->dim() == 1 &&
                                bias->size(0) == x.size(1)));
  if (!fused) {
    const Tensor xb = bias ? x + bias->view({-1, 1}) : x;
    Tensor y = at::clamp_max(xb, 0.0).mul_(scalar(kLog2e, dt)).exp2_();
    y.add_(at::clamp_min(xb, 0.0));
    if (mask) y.mul_(*mask);
    if (!phi_rT) return {y, Tensor()};
    // as astro_forward: (B nh, m, W) + phi_rT (m, W)
    Tensor a = (y.view({x.size(0) * (x.size(1) / m), m, x.size(2)}) + *phi_rT).view(y.sizes());
    return {y, a};
  }
  const int64_t B = x.size(0), R = x.size(1), C = x.size(2);
  Tensor y = at::empty({B, R, C}, x.options());
  Tensor a = phi_rT ? at::empty({B, R, C}, x.options()) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "phi", [&] {
    const scalar_t log2e = static_cast<scalar_t>(kLog2e), zero = 0;
    Rows<scalar_t> xs(x), ys(y);
    scalar_t* const ap = phi_rT ? a.data_ptr<scalar_t>() : nullptr;   // a's row (b, r) at ap + (b R + r) C
    const scalar_t* bp = bias ? bias->data_ptr<scalar_t>() : nullptr;
    const int64_t bs = bias ? bias->stride(0) : 0;
    const scalar_t* mp = mask ? mask->data_ptr<scalar_t>() : nullptr;   // the mask's row b at mp + b ms0
    const int64_t ms0 = mask ? mask->stride(0) : 0;
    const scalar_t* pr = phi_rT ? phi_rT->data_ptr<scalar_t>() : nullptr;
    const int64_t ps = phi_rT ? phi_rT->stride(0) : 0;
    // a row at a time in one pass, where that gives exp2_'s bits on y (phi_rows_take)
    const int64_t n = B * R * C;
    const bool by_row = std::is_same_v<scalar_t, float> && phi_rows_take(n);
    // kB: x plus the bias; kM: times the mask; kA: also a = phi + phi(R)
    auto run = [&](auto kB, auto kM, auto kA) {
      constexpr bool biased = decltype(kB)::value, masked = decltype(kM)::value, with_a = decltype(kA)::value;
      // x at column c of row r: x itself, or x + bias[r] rounded
      auto at_x = [&](const scalar_t* __restrict__ xi, scalar_t br, int64_t c) -> scalar_t {
        if constexpr (biased) return xi[c] + br; else return xi[c];
      };
      auto row_bias = [&](int64_t r) -> scalar_t { return biased ? bp[r * bs] : zero; };
      auto exponent = [&](int64_t b, int64_t r) {   // min(x, 0) * log2(e) into y's row
        const scalar_t* __restrict__ xi = xs(b, r);
        scalar_t* __restrict__ yi = ys(b, r);
        const scalar_t br = row_bias(r);
        for (int64_t c = 0; c < C; ++c) yi[c] = min_keep(at_x(xi, br, c), zero) * log2e;
      };
      auto finish = [&](int64_t b, int64_t r) {   // y = exp2(...) + max(x, 0), rounded, then times the mask
        const scalar_t* __restrict__ xi = xs(b, r);
        const scalar_t* __restrict__ mi = mp + b * ms0;
        scalar_t* __restrict__ yi = ys(b, r);
        const scalar_t br = row_bias(r);
        if constexpr (with_a) {
          const scalar_t* __restrict__ pi = pr + (r % m) * ps;
          scalar_t* __restrict__ ai = ap + (b * R + r) * C;
          for (int64_t c = 0; c < C; ++c) {
            scalar_t k = yi[c] + max_keep(at_x(xi, br, c), zero);
            if constexpr (masked) k = k * mi[c];
            yi[c] = k;
            ai[c] = k + pi[c];
          }
        } else {
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t e = yi[c] + max_keep(at_x(xi, br, c), zero);
            if constexpr (masked) yi[c] = e * mi[c]; else yi[c] = e;
          }
        }
      };
      if (by_row) {
        each_row(B, R, C, [&](int64_t b, int64_t r) {
          const int64_t at = (b * R + r) * C;   // the row's place in y
          phi_row_of<biased, masked, with_a>(xs(b, r), row_bias(r), mp + b * ms0,
                                             with_a ? pr + (r % m) * ps : nullptr, ys(b, r),
                                             with_a ? ap + at : nullptr, C,
                                             std::clamp<int64_t>(n - n % 32 - at, 0, C));
        });
        return;
      }
      each_row(B, R, C, exponent);
      y.exp2_();
      each_row(B, R, C, finish);
    };
    auto with_mask = [&](auto kB, auto kA) {
      if (mask) run(kB, std::true_type{}, kA); else run(kB, std::false_type{}, kA);
    };
    auto with_bias = [&](auto kA) {
      if (bias) with_mask(std::true_type{}, kA); else with_mask(std::false_type{}, kA);
    };
    if (phi_rT) with_bias(std::true_type{}); else with_bias(std::false_type{});
  });
  return {y, a};
}

Tensor phi_kernel(const Tensor& x, const OptTensor& mask = std::nullopt, const OptTensor& bias = std::nullopt) {
  return phi_kernel_a(x, mask, std::nullopt, 1, bias).first;
}

// astro_forward's values: v times the mask (B, 1, W) (times 1 without one, as Python multiplies);
// with bias (R) given, (v + bias) times it, row r of v plus bias[r] rounded first (the
// projection's bias that block_forward leaves to this loop).
Tensor values_t(const Tensor& v, const OptTensor& mask, const OptTensor& bias) {
  const auto dt = v.scalar_type();
  const Tensor& times = mask ? *mask : scalar(1.0, dt);
  if (!bias) return v * times;
  if (!(rows_ok(v, dt) && bias->is_cpu() && bias->scalar_type() == dt && bias->dim() == 1 &&
        bias->size(0) == v.size(1) &&
        (!mask || (rows_ok(*mask, dt) && mask->size(0) == v.size(0) && mask->size(1) == 1 &&
                   mask->size(2) == v.size(2)))))
    return (v + bias->view({-1, 1})) * times;
  const int64_t B = v.size(0), R = v.size(1), C = v.size(2);
  Tensor out = at::empty({B, R, C}, v.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "values", [&] {
    Rows<scalar_t> vs(v), os(out);
    const scalar_t* bp = bias->data_ptr<scalar_t>();
    const int64_t bs = bias->stride(0);
    if (mask) {
      Rows<scalar_t> ms(*mask);
      each_row(B, R, C, [&](int64_t b, int64_t r) {
        const scalar_t* __restrict__ vi = vs(b, r);
        const scalar_t* __restrict__ mi = ms(b, 0);
        scalar_t* __restrict__ oi = os(b, r);
        const scalar_t br = bp[r * bs];
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t biased = vi[c] + br;
          oi[c] = biased * mi[c];
        }
      });
    } else {
      each_row(B, R, C, [&](int64_t b, int64_t r) {
        const scalar_t* __restrict__ vi = vs(b, r);
        scalar_t* __restrict__ oi = os(b, r);
        const scalar_t br = bp[r * bs];
        for (int64_t c = 0; c < C; ++c) oi[c] = vi[c] + br;   // times 1: the same number
      });
    }
  });
  return out;
}

// dst = d * min(f, 1), dst possibly d itself (astro_backward's put of dq, dk: the gradient
// times phi'(x) = min(phi(x), 1), where Python clamps into a fresh tensor and multiplies)
void mul_dphi_out(Tensor dst, const Tensor& d, const Tensor& f) {
  const auto dt = dst.scalar_type();
  if (!(rows_ok(dst, dt) && rows_ok(d, dt) && rows_ok(f, dt) && writable(dst) && dst.sizes() == d.sizes() &&
        dst.sizes() == f.sizes())) {
    Tensor dphi = at::clamp_max(f, scalar(1.0, f.scalar_type()));
    at::mul_out(dst, d, dphi);
    return;
  }
  const int64_t B = dst.size(0), R = dst.size(1), C = dst.size(2);
  AT_DISPATCH_FLOATING_TYPES(dst.scalar_type(), "mul_dphi", [&] {
    const scalar_t one = 1;
    Rows<scalar_t> os(dst), ds(d), fs(f);
    each_row(B, R, C, [&](int64_t b, int64_t r) {
      const scalar_t* di = ds(b, r);   // may be dst's own row: no __restrict__
      const scalar_t* __restrict__ fi = fs(b, r);
      scalar_t* oi = os(b, r);
      for (int64_t c = 0; c < C; ++c) oi[c] = di[c] * min_keep(fi[c], one);
    });
  });
}

// a = a * m + r in place (a dropout mask, then the residual: a.mul_(m).add_(r)), each result
// rounded; a, m, r (B, R, C) with m or r possibly strided views
Tensor mul_add_(Tensor& a, const Tensor& m, const Tensor& r) {
  const auto dt = a.scalar_type();
  if (!(rows_ok(a, dt) && rows_ok(m, dt) && rows_ok(r, dt) && writable(a) && a.sizes() == m.sizes() &&
        a.sizes() == r.sizes()))
    return a.mul_(m).add_(r);
  const int64_t B = a.size(0), R = a.size(1), C = a.size(2);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "mul_add", [&] {
    Rows<scalar_t> as(a), ms(m), rs(r);
    each_row(B, R, C, [&](int64_t b, int64_t i) {
      scalar_t* __restrict__ ai = as(b, i);
      const scalar_t* __restrict__ mi = ms(b, i);
      const scalar_t* __restrict__ ri = rs(b, i);
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t dropped = ai[c] * mi[c];
        ai[c] = dropped + ri[c];
      }
    });
  });
  return a;
}

// a = (a + bias) * m + r in place ((a + bias) + r without m), bias (C) along the last dim, each
// result rounded: a linear map's bias left to this loop (unproject_t's add_; the FFN's addmm,
// checked products), then the dropout mask and the residual; a, m, r (B, R, C)
Tensor bias_mul_add_(Tensor& a, const Tensor& bias, const OptTensor& m, const Tensor& r) {
  const auto dt = a.scalar_type();
  if (!(rows_ok(a, dt) && (!m || (rows_ok(*m, dt) && a.sizes() == m->sizes())) && rows_ok(r, dt) && writable(a) &&
        a.sizes() == r.sizes() && bias.is_cpu() && bias.scalar_type() == dt && bias.dim() == 1 &&
        bias.size(0) == a.size(2))) {
    a.add_(bias);
    return m ? mul_add_(a, *m, r) : a.add_(r);
  }
  const int64_t B = a.size(0), R = a.size(1), C = a.size(2);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "bias_mul_add", [&] {
    Rows<scalar_t> as(a), rs(r);
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    const int64_t bs = bias.stride(0);
    if (m) {
      Rows<scalar_t> ms(*m);
      each_row(B, R, C, [&](int64_t b, int64_t i) {
        scalar_t* __restrict__ ai = as(b, i);
        const scalar_t* __restrict__ mi = ms(b, i);
        const scalar_t* __restrict__ ri = rs(b, i);
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t biased = ai[c] + bp[c * bs];
          const scalar_t dropped = biased * mi[c];
          ai[c] = dropped + ri[c];
        }
      });
    } else {
      each_row(B, R, C, [&](int64_t b, int64_t i) {
        scalar_t* __restrict__ ai = as(b, i);
        const scalar_t* __restrict__ ri = rs(b, i);
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t biased = ai[c] + bp[c * bs];
          ai[c] = biased + ri[c];
        }
      });
    }
  });
  return a;
}

// The dropout draw's loops are integer arithmetic and selects (the state's update, the
// tempering, the pieces' comparison): the same bits at any vector width. These clones let the
// compiler use the widest vectors the CPU has (the default build targets SSE2).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define RMAAT_WIDE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RMAAT_WIDE_CLONES
#endif

// o[i] = kept where piece[i] >= t, else 0, for i < count: the keep values of dropout_keep and
// dropout_draw, one expression for both
template <typename T>
RMAAT_WIDE_CLONES
void keep_pieces(const int16_t* __restrict__ piece, T* __restrict__ o, int64_t count, int t, T kept) {
  const T zero = 0;
  for (int64_t i = 0; i < count; ++i) o[i] = static_cast<int>(piece[i]) >= t ? kept : zero;
}

// kernels.dropout_masks' keep values from its draw, full-precision dtypes: the n 16-bit pieces
// of ``bits`` (int64) as {0, scale}, a piece kept where it is >= threshold. Python forms the
// same values with four operators ((piece - (q - 32769)) * scale, clamped to [0, scale]).
Tensor dropout_keep(const Tensor& bits, int64_t n, int64_t threshold, double scale, at::ScalarType dtype) {
  TORCH_CHECK(bits.is_cpu() && bits.is_contiguous() && bits.scalar_type() == at::kLong && 4 * bits.numel() >= n,
              "dropout_keep: bits must be a contiguous CPU int64 tensor of at least ceil(n / 4) values");
  Tensor out = at::empty({n}, bits.options().dtype(dtype));
  const int16_t* piece = reinterpret_cast<const int16_t*>(bits.data_ptr<int64_t>());
  const int t = static_cast<int>(threshold);
  AT_DISPATCH_FLOATING_TYPES(dtype, "dropout_keep", [&] {
    const scalar_t kept = static_cast<scalar_t>(scale);
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, n, at::internal::GRAIN_SIZE, [&](int64_t lo, int64_t hi) {
      keep_pieces(piece + lo, o + lo, hi - lo, t, kept);
    });
  });
  return out;
}

// ---------------------------------------------------------------- the dropout draw (CPU)
//
// kernels.dropout_masks draws ceil(n / 4) int64 values with random_ over the full 64-bit range
// from the default CPU generator, then forms the keep values from their 16-bit pieces. ATen
// makes each value from two 32-bit outputs of the generator's MT19937 (the first the high
// half), one value at a time through a call into the library. dropout_draw takes the same
// outputs from the generator's own state, in blocks, and leaves the state where random_ would:
// the same pieces, so the same masks, and the same next draw for whatever comes after.

inline uint32_t mt_twist(uint32_t u, uint32_t v) {
  return (((u & at::UMASK) | (v & at::LMASK)) >> 1) ^ ((v & 1) ? at::MATRIX_A : 0);
}

// the generator's next_state: the 624 words of state replaced by the next 624
RMAAT_WIDE_CLONES
void mt_regenerate(uint32_t* s) {
  constexpr int N = at::MERSENNE_STATE_N, M = at::MERSENNE_STATE_M;
  for (int i = 0; i < N - M; ++i) s[i] = s[i + M] ^ mt_twist(s[i], s[i + 1]);
  for (int i = N - M; i < N - 1; ++i) s[i] = s[i + M - N] ^ mt_twist(s[i], s[i + 1]);
  s[N - 1] = s[M - 1] ^ mt_twist(s[N - 1], s[0]);
}

inline uint32_t mt_temper(uint32_t y) {
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680;
  y ^= (y << 15) & 0xefc60000;
  y ^= (y >> 18);
  return y;
}

// Whether d is a state the generator's own operator() reads within its 624 words.
bool mt_readable(const at::mt19937_data_pod& d) {
  return d.seeded_ && d.left_ >= 1 && d.left_ <= at::MERSENNE_STATE_N &&
         static_cast<int64_t>(d.next_) + d.left_ - 1 <= at::MERSENNE_STATE_N;
}

// count outputs of the generator in state d, as its operator() gives them one by one
RMAAT_WIDE_CLONES
void mt_fill(at::mt19937_data_pod& d, uint32_t* out, int64_t count) {
  uint32_t* s = d.state_.data();
  while (count > 0) {
    if (d.left_ == 1) {   // operator(): --left_ reaches 0, next_state, then word 0
      mt_regenerate(s);
      d.left_ = at::MERSENNE_STATE_N;
      d.next_ = 0;
      *out++ = mt_temper(s[d.next_++]);
      --count;
      continue;
    }
    const int64_t k = std::min<int64_t>(d.left_ - 1, count);
    const uint32_t* src = s + d.next_;
    for (int64_t i = 0; i < k; ++i) out[i] = mt_temper(src[i]);
    d.next_ += static_cast<uint32_t>(k);
    d.left_ -= static_cast<int>(k);
    out += k;
    count -= k;
  }
}

// kernels.dropout_masks' draw and keep values in one: n values {0, scale} of dtype, from
// `generator` (a CPU one; the default CPU generator when None), bitwise those of random_
// followed by dropout_keep.
Tensor dropout_draw(int64_t n, int64_t threshold, double scale, at::ScalarType dtype,
                    const std::optional<at::Generator>& generator) {
  TORCH_CHECK(n >= 0, "dropout_draw: n must be >= 0, got ", n);
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  const int64_t values = (n + 3) / 4;   // the int64 values random_ would draw
  Tensor out = at::empty({n}, at::TensorOptions().dtype(dtype));
  std::unique_lock<std::mutex> lock(gen->mutex_);
  at::mt19937 engine = gen->engine();
  at::mt19937_data_pod d = engine.data();
  if (!mt_readable(d)) {   // a state operator() itself would read oddly: let random_ draw it
    lock.unlock();
    Tensor bits = at::empty({values}, at::TensorOptions().dtype(at::kLong));
    bits.random_(std::numeric_limits<int64_t>::min(), std::optional<int64_t>(), generator);
    return dropout_keep(bits, n, threshold, scale, dtype);
  }
  const int t = static_cast<int>(threshold);
  AT_DISPATCH_FLOATING_TYPES(dtype, "dropout_draw", [&] {
    const scalar_t kept = static_cast<scalar_t>(scale);
    scalar_t* o = out.data_ptr<scalar_t>();
    constexpr int64_t kBlock = 512;          // int64 values per block
    alignas(64) uint32_t w[2 * kBlock];
    alignas(64) int16_t piece[4 * kBlock];
    for (int64_t v0 = 0; v0 < values; v0 += kBlock) {
      const int64_t k = std::min(kBlock, values - v0);
      mt_fill(d, w, 2 * k);
      // random64 makes the first output the high half: on a little-endian machine the pair
      // swapped is the int64 value's bytes as random_ stores them, so its 16-bit pieces (as
      // Python's view reads them) are piece[0..4k)
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
      for (int64_t j = 0; j < k; ++j) std::swap(w[2 * j], w[2 * j + 1]);
#endif
      std::memcpy(piece, w, static_cast<size_t>(8 * k));
      const int64_t lo = 4 * v0;
      keep_pieces(piece, o + lo, std::min(n, lo + 4 * k) - lo, t, kept);
    }
  });
  engine.set_data(d);
  gen->set_engine(engine);
  return out;
}

// ---------------------------------------------------------------- the optimiser's loops (CPU)

// Two of ATen's elementwise operators are one multiply-add each on the CPU, in their vector body
// (vec::fmadd) and in their scalar tail alike: lerp with a weight under 1/2 (start + w (end -
// start)) and add / addcmul with a factor (self + alpha other; self + value t1 t2, the product
// value t1 rounded first). The loops that stand for them call std::fma, which rounds once as
// those do; these clones let the compiler issue the instruction where the CPU has it (the
// default clone calls the C library's fmaf, the same value, slower).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define RMAAT_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define RMAAT_FMA_CLONES
#endif

// Whether t is a float32 CPU tensor in row-major order, dense (the loops below index it flat).
bool flat_float(const Tensor& t) {
  return t.defined() && t.layout() == at::kStrided && t.is_cpu() && t.scalar_type() == at::kFloat &&
         t.is_contiguous();
}

// f(lo, hi) over [0, n) in ATen's intra-op threads: every element is independent of the others,
// so the bits do not depend on the split.
template <typename F>
void each_span(int64_t n, const F& f) {
  at::parallel_for(0, n, at::internal::GRAIN_SIZE, f);
}

RMAAT_FMA_CLONES
void adamw_moments(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                   float* __restrict__ v, float* __restrict__ v_copy, int64_t lo, int64_t hi, bool decay,
                   float keep, float w1, float beta2, float w2) {
  for (int64_t i = lo; i < hi; ++i) {
    const float gi = g[i];
    if (decay) p[i] = p[i] * keep;                   // p.mul_(1 - lr wd)
    m[i] = std::fma(w1, gi - m[i], m[i]);            // exp_avg.lerp_(g, 1 - beta1)
    const float vi = v[i] * beta2;                   // exp_avg_sq.mul_(beta2)
    v[i] = v_copy[i] = std::fma(w2 * gi, gi, vi);    // .addcmul_(g, g, value=1 - beta2)
  }
}

void adamw_update(float* __restrict__ p, const float* __restrict__ m, const float* __restrict__ root, int64_t lo,
                  int64_t hi, float bc2_root, float eps, float neg_step) {
  for (int64_t i = lo; i < hi; ++i) {
    const float denom = root[i] / bc2_root + eps;    // (exp_avg_sq.sqrt() / sqrt(bc2)).add_(eps)
    const float delta = neg_step * m[i] / denom;     // addcdiv_'s value * t1 / t2
    p[i] = p[i] + delta;
  }
}

// The calling thread's intra-op thread count at one while it lives (at::set_num_threads is the
// calling thread's, as torch.set_num_threads is), and as it was after.
class OneThread {
 public:
  OneThread() : before_(at::get_num_threads()) {
    if (before_ != 1) at::set_num_threads(1);
  }
  ~OneThread() {
    if (before_ != 1) at::set_num_threads(before_);
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  const int before_;
};

// torch.optim.AdamW.step over one parameter group, bitwise as torch's single-tensor path (the
// CPU's default, whose foreach path gives the same bits) computes it, with decoupled weight
// decay and none of amsgrad, maximize, capturable or differentiable: for each parameter,
//   step += 1;  p *= 1 - lr wd (wd != 0);  m.lerp_(g, 1 - beta1);
//   v.mul_(beta2).addcmul_(g, g, value=1 - beta2);
//   p.addcdiv_(m, v.sqrt() / sqrt(1 - beta2^step) + eps, value=-lr / (1 - beta1^step)).
// The scalars in double as Python forms them (its ** on floats is the C library's pow, as here),
// each taken as float where the operator takes it. The square roots stay ATen's (its vector
// code's are not always the correctly rounded ones): one sqrt_ over a copy of every v of the
// group, laid end to end (ATen's sqrt gives an element the same bits wherever it lies and
// however many threads take it), on the calling thread alone. Every
// tensor float32, CPU, dense; a step a float32 or float64 scalar on the CPU; 1 - beta1 under 1/2
// (lerp's other formula is not written here): adamw_takes, which adamw_step asks first.
void adamw_group(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                 const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                 const std::vector<Tensor>& steps, double lr, double beta1, double beta2, double weight_decay,
                 double eps) {
  const size_t k = params.size();
  std::vector<int64_t> offset(k + 1, 0);
  for (size_t j = 0; j < k; ++j) offset[j + 1] = offset[j] + params[j].numel();
  const bool decay = weight_decay != 0;
  const float keep = static_cast<float>(1 - lr * weight_decay), w1 = static_cast<float>(1 - beta1);
  const float b2 = static_cast<float>(beta2), w2 = static_cast<float>(1 - beta2), e = static_cast<float>(eps);
  Tensor roots = at::empty({offset[k]}, params.empty() ? at::TensorOptions(at::kFloat) : params[0].options());
  float* r = roots.data_ptr<float>();
  std::vector<double> count(k);
  for (size_t j = 0; j < k; ++j) {
    Tensor s = steps[j];
    if (s.scalar_type() == at::kFloat) {   // step_t += 1 in the step's own dtype
      float* c = s.data_ptr<float>();
      *c = *c + 1.0f;
      count[j] = *c;
    } else {
      double* c = s.data_ptr<double>();
      *c = *c + 1.0;
      count[j] = *c;
    }
    float* p = params[j].data_ptr<float>();
    const float* g = grads[j].data_ptr<float>();
    float* m = exp_avgs[j].data_ptr<float>();
    float* v = exp_avg_sqs[j].data_ptr<float>();
    float* vc = r + offset[j];
    each_span(offset[j + 1] - offset[j], [&](int64_t lo, int64_t hi) {
      adamw_moments(p, g, m, v, vc, lo, hi, decay, keep, w1, b2, w2);
    });
  }
  {
    // in the calling thread only: ATen's sqrt calls MKL's vector sqrt, which starts its OpenMP
    // team whatever the size (torch's own step: once per parameter), and the team's threads
    // then spin for milliseconds after each call, on cores that a batch shard's thread
    // (rmaat_model.shards) or the next operator wants; an element's bits are the same either way
    const OneThread one;
    roots.sqrt_();
  }
  for (size_t j = 0; j < k; ++j) {
    const double bc1 = 1 - std::pow(beta1, count[j]), bc2 = 1 - std::pow(beta2, count[j]);
    const float neg_step = static_cast<float>(-(lr / bc1)), bc2_root = static_cast<float>(std::pow(bc2, 0.5));
    float* p = params[j].data_ptr<float>();
    const float* m = exp_avgs[j].data_ptr<float>();
    const float* root = r + offset[j];
    each_span(offset[j + 1] - offset[j], [&](int64_t lo, int64_t hi) {
      adamw_update(p, m, root, lo, hi, bc2_root, e, neg_step);
    });
  }
}

// Whether adamw_group takes a group's tensors (one list each, one entry per parameter).
bool adamw_takes(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                 const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                 const std::vector<Tensor>& steps, double beta1) {
  const size_t k = params.size();
  if (grads.size() != k || exp_avgs.size() != k || exp_avg_sqs.size() != k || steps.size() != k ||
      !(std::abs(1 - beta1) < 0.5))
    return false;
  for (size_t j = 0; j < k; ++j) {
    const int64_t n = params[j].numel();
    if (!(flat_float(params[j]) && flat_float(grads[j]) && flat_float(exp_avgs[j]) && flat_float(exp_avg_sqs[j]) &&
          grads[j].numel() == n && exp_avgs[j].numel() == n && exp_avg_sqs[j].numel() == n))
      return false;
    const Tensor& s = steps[j];
    if (!(s.defined() && s.is_cpu() && s.numel() == 1 && !s.requires_grad() &&
          (s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble)))
      return false;
  }
  return true;
}

// optim.AdamW's step: adamw_group for each group (every argument holds one entry per group: a
// list of tensors, or a number) where adamw_takes every group; otherwise false, with nothing
// changed (torch's step then runs).
bool adamw_step(const std::vector<std::vector<Tensor>>& params, const std::vector<std::vector<Tensor>>& grads,
                const std::vector<std::vector<Tensor>>& exp_avgs, const std::vector<std::vector<Tensor>>& exp_avg_sqs,
                const std::vector<std::vector<Tensor>>& steps, const std::vector<double>& lr,
                const std::vector<double>& beta1, const std::vector<double>& beta2,
                const std::vector<double>& weight_decay, const std::vector<double>& eps) {
  const size_t G = params.size();
  TORCH_CHECK(grads.size() == G && exp_avgs.size() == G && exp_avg_sqs.size() == G && steps.size() == G &&
                  lr.size() == G && beta1.size() == G && beta2.size() == G && weight_decay.size() == G &&
                  eps.size() == G,
              "adamw_step: one list of each and one of each number per group");
  for (size_t i = 0; i < G; ++i)
    if (!adamw_takes(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], steps[i], beta1[i])) return false;
  for (size_t i = 0; i < G; ++i)
    adamw_group(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], steps[i], lr[i], beta1[i], beta2[i],
                weight_decay[i], eps[i]);
  return true;
}

RMAAT_FMA_CLONES
void add_scaled(float* __restrict__ total, const float* __restrict__ g, int64_t lo, int64_t hi, float w) {
  for (int64_t i = lo; i < hi; ++i) total[i] = std::fma(g[i], w, total[i]);   // total.add_(g, alpha=w)
}

// shards._sum_grads over its parameter lists: for each parameter i, replica 0's gradient of it
// .mul_(w_0), then .add_(replica j's, alpha=w_j) for j = 1, 2, ... in order, in place in replica
// 0's gradient, which becomes the parameter's gradient (or is added to it: p.grad.add_(sum), as
// Python does); every replica's gradient released. Taken only where every replica has a gradient
// of every parameter, each a dense float32 CPU tensor of the parameter's size: otherwise false,
// with nothing changed (the Python loop then runs).
bool sum_grads(const std::vector<Tensor>& params, const std::vector<std::vector<Tensor>>& replicas,
               const std::vector<double>& weights) {
  TORCH_CHECK(!replicas.empty() && replicas.size() == weights.size(), "sum_grads: one weight per shard");
  const size_t k = params.size();
  for (const auto& rp : replicas) {
    TORCH_CHECK(rp.size() == k, "sum_grads: every replica must list one parameter per parameter of the model");
    for (size_t i = 0; i < k; ++i) {
      const Tensor& g = rp[i].grad();
      if (!g.defined() || !flat_float(g) || g.numel() != params[i].numel()) return false;
    }
  }
  const float w0 = static_cast<float>(weights[0]);
  for (size_t i = 0; i < k; ++i) {
    Tensor total = replicas[0][i].grad();
    float* t = total.data_ptr<float>();
    const int64_t n = total.numel();
    each_span(n, [&](int64_t lo, int64_t hi) {
      for (int64_t e = lo; e < hi; ++e) t[e] = t[e] * w0;   // mul_(w_0)
    });
    for (size_t j = 1; j < replicas.size(); ++j) {
      const float* g = replicas[j][i].grad().data_ptr<float>();
      const float w = static_cast<float>(weights[j]);
      each_span(n, [&](int64_t lo, int64_t hi) { add_scaled(t, g, lo, hi, w); });
    }
    for (const auto& rp : replicas) rp[i].mutable_grad().reset();
    Tensor& grad = params[i].mutable_grad();
    if (grad.defined())
      grad.add_(total);
    else
      grad = total;
  }
  return true;
}

// ---------------------------------------------------------------- checked products (CPU, float32)

// Where the block leaves an ATen product, or its bias, to a loop of its own, it does so only for a
// shape where the loop has been seen to give ATen's bits: the first product of each shape (sizes,
// strides; with ATen's thread count and oneDNN's state, aten_state) in a process is made both
// ways on seeded random numbers, and a shape whose bits differ anywhere keeps ATen's operators
// for the rest of the process (checked_products says how many of each). None is used while a
// Python dispatch mode watches the operators (such as FlopCounterMode, which counts only the
// products that reach it), nor under a float32 matmul precision below full (checks_open).
//
// The heads' products. astro_forward's YT = H^T phi(Q)^T and astro_backward's dfqT, dfkT and dvT
// multiply, for every (sequence, head), a head-sized matrix (hs x hs or hs+1) by the head's hs
// or hs+1 rows of the window's columns: the demo's batches make 128 products of 16 x 16 x 136 per
// call. ATen hands them to the BLAS's batched gemm, which runs them at 20-60 GFLOP/s in a
// training step, and then one more operator reads each result once or twice (the normaliser's
// division, phi' and the bias, the mask). The loop below makes each product tile in registers
// and applies those operators before it stores: one pass over the window per product. Its sums
// are the BLAS's where the BLAS adds the terms in the same order: every output element one chain
// of multiply-adds over k = 0, 1, ..., each rounded once, from zero, as MKL's sgemm kernels do on
// the CPU measured (Intel Xeon, AVX-512); ATen's own loop for products under 400 elements does
// not (it rounds each product apart), and is refused.
//
// The linear maps' biases. kernels.project_t is baddbmm(bias, W, x^T), and the FFN's second map
// addmm(bias, A, W^T): each copies the bias into every row or column of its output before the
// product adds into it, one more pass over it. Where the product alone then ATen's add of the
// bias gives the same bits (MKL adds C after the sum, one rounding, on that CPU), the block takes
// the product alone, and the loop that reads it next adds the bias as it reads, as ATen's add
// does (phi_kernel_a and values_t for the projection; bias_mul_add_, with the dropout mask and
// the residual, for the FFN). The output projection's bias, which kernels.unproject_t adds after
// its product anyway, goes into bias_mul_add_ with no check.
//
// The operators after a product are exact here as the loops above are: the same IEEE operations
// in their order, each result rounded.
#if defined(__x86_64__) && defined(__GNUC__)
#define RMAAT_HEADS 1
#define RMAAT_AVX512 __attribute__((target("avx512f")))
#else
#define RMAAT_HEADS 0
#endif

struct Checked {
  std::mutex lock;
  std::map<std::vector<int64_t>, bool> shapes;   // (what, shape) -> the loop's bits are ATen's
  std::atomic<bool> enabled{true};
};

Checked& checked() {
  static Checked s;
  return s;
}

// oneDNN's float32 matmul precision (torch.backends.mkldnn.matmul.fp32_precision, which
// torch.set_float32_matmul_precision also sets; read through the backend's own getter, as the
// legacy one raises once both APIs were used): "none" or "ieee" keeps float32 products float32.
at::Float32Precision onednn_matmul_precision() {
  return at::globalContext().float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL);
}

// Whether the loops may stand in for ATen's operators now: switched on (checked_products), no
// Python dispatch mode on this thread, and float32 products kept in float32. Under a lower
// precision ATen may send a float32 product to bfloat16 or TF32 kernels depending on its whole
// size (its batch too), which a check on a few items would not see; the loops stay off then.
bool checks_open() {
  const auto precision = onednn_matmul_precision();
  return checked().enabled.load() && c10::impl::TorchDispatchModeTLS::stack_len() == 0 &&
         (precision == at::Float32Precision::NONE || precision == at::Float32Precision::IEEE);
}

// ATen's state that picks a product's arithmetic beside its shape: the intra-op thread count,
// oneDNN's float32 matmul precision and whether oneDNN is on. A change of any of them
// mid-process makes new keys, checked again.
std::vector<int64_t> aten_state() {
  return {at::get_num_threads(), static_cast<int64_t>(onednn_matmul_precision()),
          at::globalContext().userEnabledMkldnn() ? 1 : 0};
}

// check() (both ways on random numbers: the same bits?) run once per process and key (with
// aten_state), its answer kept; under the lock, so two threads do not both run it.
template <class F>
bool checked_once(std::vector<int64_t> key, const F& check) {
  const std::vector<int64_t> state = aten_state();
  key.insert(key.end(), state.begin(), state.end());
  Checked& st = checked();
  std::lock_guard<std::mutex> hold(st.lock);
  auto it = st.shapes.find(key);
  if (it != st.shapes.end()) return it->second;
  const bool same = check();
  st.shapes.emplace(std::move(key), same);
  return same;
}

// A float32 tensor of the given sizes and strides (a check's operand laid out as the real one),
// every element of its storage a seeded number in [-1, 1) with 24 random bits: a private
// generator (xorshift64), so the run's own random state is not touched. Past the first kFresh
// elements the numbers repeat with that period (a product's check then costs the product, not
// the drawing): every element still sees random operands.
constexpr int64_t kFresh = 16411;   // a prime: the period falls across rows of any width

// The checks' generator (xorshift64): the next 24 random bits of state.
inline uint32_t next_bits24(uint64_t& state) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return static_cast<uint32_t>(state >> 40);
}

Tensor random_strided(at::IntArrayRef sizes, at::IntArrayRef strides, uint64_t& state) {
  int64_t span = 1;   // every element a stride can reach
  for (size_t d = 0; d < sizes.size(); ++d) span += (sizes[d] - 1) * strides[d];
  Tensor t = at::empty({span}, at::TensorOptions().dtype(at::kFloat));
  float* p = t.data_ptr<float>();
  for (int64_t e = 0; e < std::min(span, kFresh); ++e) p[e] = static_cast<float>(next_bits24(state)) * 0x1p-23f - 1.0f;
  for (int64_t e = kFresh; e < span; e += kFresh)
    std::memcpy(p + e, p, sizeof(float) * std::min(kFresh, span - e));
  return t.as_strided(sizes, strides);
}

// Whether two float32 tensors of one shape hold the same bits.
bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = a.contiguous(), y = b.contiguous();
  return x.sizes() == y.sizes() &&
         std::memcmp(x.data_ptr<float>(), y.data_ptr<float>(), sizeof(float) * x.numel()) == 0;
}

bool heads_cpu() {
#if RMAAT_HEADS
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
#else
  return false;
#endif
}

#if RMAAT_HEADS
// One (sequence, head) item's output rows: row i of item bh at base(bh) + i * sr.
struct Plane {
  float* p = nullptr;
  int64_t nh = 1, sb = 0, sh = 0, sr = 0;
  float* base(int64_t bh) const { return p + (bh / nh) * sb + (bh % nh) * sh; }
};

// The rows of t (BH, R, C), an item per (sequence, head).
Plane item_rows(const Tensor& t) { return {t.data_ptr<float>(), 1, t.stride(0), 0, t.stride(1)}; }

// The rows of t (B, nh m, C), as the projection lays a gradient out: head h's m rows of sequence b
// are item b nh + h.
Plane head_rows(const Tensor& t, int64_t nh, int64_t m) {
  return {t.data_ptr<float>(), nh, t.stride(0), m * t.stride(1), t.stride(1)};
}

// The one row of t (B, 1, C) of each sequence, shared by its nh items.
Plane sequence_row(const Tensor& t, int64_t nh) { return {t.data_ptr<float>(), nh, t.stride(0), 0, 0}; }

// The operators after the product, each given the 16 lanes of output row i at column c of one
// item (k: the lanes inside the window). at(bh) binds an item.
struct StoreOut {   // the product itself
  Plane o;
  struct Item {
    float* o; int64_t sr;
    RMAAT_AVX512 void operator()(int64_t i, int64_t c, __m512 v, __mmask16 k) const {
      _mm512_mask_storeu_ps(o + i * sr + c, k, v);
    }
  };
  Item at(int64_t bh) const { return {o.base(bh), o.sr}; }
};

struct DivideOut {   // yT = YT[:hs] / C, C the item's one row
  Plane o, den;
  struct Item {
    float* o; int64_t sr; const float* d;
    RMAAT_AVX512 void operator()(int64_t i, int64_t c, __m512 v, __mmask16 k) const {
      const __m512 dv = _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), k, d + c);
      _mm512_mask_storeu_ps(o + i * sr + c, k, _mm512_div_ps(v, dv));
    }
  };
  Item at(int64_t bh) const { return {o.base(bh), o.sr, den.base(bh)}; }
};

// min_keep(f, 1) on 16 lanes: 1 where f > 1, else f (a NaN kept)
RMAAT_AVX512 inline __m512 dphi16(__m512 f) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(f, one, _CMP_GT_OQ), f, one);
}

struct DphiOut {   // (product [+ t, the row's bias]) * min(f, 1): mul_dphi_out after add_
  Plane o, f, t;   // t.p null: no bias
  struct Item {
    float* o; int64_t sr; const float* f; int64_t fr; const float* t; int64_t tr;
    RMAAT_AVX512 void operator()(int64_t i, int64_t c, __m512 v, __mmask16 k) const {
      if (t) v = _mm512_add_ps(v, _mm512_set1_ps(t[i * tr]));
      const __m512 fv = _mm512_maskz_loadu_ps(k, f + i * fr + c);
      _mm512_mask_storeu_ps(o + i * sr + c, k, _mm512_mul_ps(v, dphi16(fv)));
    }
  };
  Item at(int64_t bh) const {
    return {o.base(bh), o.sr, f.base(bh), f.sr, t.p ? t.base(bh) : nullptr, t.sr};
  }
};

struct MaskOut {   // product * mask (the sequence's one row), or the product where mask is null
  Plane o, mask;
  struct Item {
    float* o; int64_t sr; const float* m;
    RMAAT_AVX512 void operator()(int64_t i, int64_t c, __m512 v, __mmask16 k) const {
      if (m) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, m + c));
      _mm512_mask_storeu_ps(o + i * sr + c, k, v);
    }
  };
  Item at(int64_t bh) const { return {o.base(bh), o.sr, mask.p ? mask.base(bh) : nullptr}; }
};

// MR rows from i0 by NV vectors of 16 columns from c0 of one item's product A X (A's element
// (i, k) at a[i sar + k sac], X's row k at x + k sxr), summed over k in order, one multiply-add
// per term; `last` marks the lanes of the last vector inside the window.
template <int MR, int NV, class Out>
RMAAT_AVX512 inline void heads_tile(const float* a, int64_t sar, int64_t sac, const float* x, int64_t sxr,
                                    int64_t K, int64_t i0, int64_t c0, __mmask16 last, const Out& out) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* xk = x + k * sxr + c0;
    __m512 xv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; ++v) xv[v] = _mm512_loadu_ps(xk + 16 * v);
    xv[NV - 1] = _mm512_maskz_loadu_ps(last, xk + 16 * (NV - 1));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 ar = _mm512_set1_ps(a[(i0 + r) * sar + k * sac]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(ar, xv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      out(i0 + r, c0 + 16 * v, acc[r][v], v == NV - 1 ? last : static_cast<__mmask16>(0xFFFF));
}

template <int MR, class Out>
RMAAT_AVX512 void heads_cols(const float* a, int64_t sar, int64_t sac, const float* x, int64_t sxr, int64_t K,
                             int64_t i0, int64_t c0, int nv, __mmask16 last, const Out& out) {
  switch (nv) {
    case 1: heads_tile<MR, 1>(a, sar, sac, x, sxr, K, i0, c0, last, out); break;
    case 2: heads_tile<MR, 2>(a, sar, sac, x, sxr, K, i0, c0, last, out); break;
    case 3: heads_tile<MR, 3>(a, sar, sac, x, sxr, K, i0, c0, last, out); break;
    case 4: heads_tile<MR, 4>(a, sar, sac, x, sxr, K, i0, c0, last, out); break;
    case 5: heads_tile<MR, 5>(a, sar, sac, x, sxr, K, i0, c0, last, out); break;
    default: heads_tile<MR, 6>(a, sar, sac, x, sxr, K, i0, c0, last, out); break;
  }
}

// Rows [r0, r1) of every item's product, given to out as rows 0, 1, ...: A (BH, M, K) with strides
// (sab, sar, sac), X (BH, K, N) with strides (sxb, sxr, 1); items split among ATen's intra-op threads.
template <class Out>
RMAAT_AVX512 void heads_run(const float* a, int64_t sab, int64_t sar, int64_t sac, const float* x, int64_t sxb,
                            int64_t sxr, int64_t BH, int64_t K, int64_t N, int64_t r0, int64_t r1, const Out& out) {
  constexpr int64_t kCols = 6;   // vectors of 16 columns per tile: 4 x 6 accumulators in registers
  const int64_t nv = (N + 15) / 16;
  const __mmask16 tail = N % 16 ? static_cast<__mmask16>((1u << (N % 16)) - 1) : static_cast<__mmask16>(0xFFFF);
  at::parallel_for(0, BH, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t bh = lo; bh < hi; ++bh) {
      const float* ab = a + bh * sab + r0 * sar;   // output row i: A's row r0 + i
      const float* xb = x + bh * sxb;
      const auto item = out.at(bh);
      for (int64_t v0 = 0; v0 < nv; v0 += kCols) {
        const int n = static_cast<int>(std::min(kCols, nv - v0));
        const __mmask16 last = v0 + n == nv ? tail : static_cast<__mmask16>(0xFFFF);
        int64_t i = 0;
        for (; i + 4 <= r1 - r0; i += 4) heads_cols<4>(ab, sar, sac, xb, sxr, K, i, 16 * v0, n, last, item);
        for (; i < r1 - r0; ++i) heads_cols<1>(ab, sar, sac, xb, sxr, K, i, 16 * v0, n, last, item);
      }
    }
  });
}

// heads_run on tensors: A (BH, M, K), X (BH, K, N) with rows contiguous.
template <class Out>
void heads_apply(const Tensor& A, const Tensor& X, int64_t r0, int64_t r1, const Out& out) {
  heads_run(A.data_ptr<float>(), A.stride(0), A.stride(1), A.stride(2), X.data_ptr<float>(), X.stride(0),
            X.stride(1), A.size(0), A.size(2), X.size(2), r0, r1, out);
}
#endif

// Whether the loop's product A X is at::bmm's to the bit for A's and X's shape and strides (the
// batch's stride aside, and its size but for a batch of one, which ATen makes with one gemm).
bool heads_match(const Tensor& A, const Tensor& X) {
#if RMAAT_HEADS
  const int64_t M = A.size(1), K = A.size(2), N = X.size(2);
  const int64_t kItems = A.size(0) == 1 ? 1 : 3;
  return checked_once({0, M, K, N, A.stride(1), A.stride(2), X.stride(1), kItems}, [&] {
    uint64_t draw = 20261206;
    const int64_t a_item = (M - 1) * A.stride(1) + (K - 1) * A.stride(2) + 1;
    Tensor ta = random_strided({kItems, M, K}, {a_item, A.stride(1), A.stride(2)}, draw);
    Tensor tx = random_strided({kItems, K, N}, {(K - 1) * X.stride(1) + N, X.stride(1), 1}, draw);
    Tensor got = at::empty({kItems, M, N}, X.options());
    heads_apply(ta, tx, 0, M, StoreOut{item_rows(got)});
    return same_bits(at::bmm(ta, tx), got);
  });
#else
  (void)A; (void)X;
  return false;
#endif
}

// Whether the loop may make A X here: float32 CPU tensors, X's rows contiguous, an AVX-512 CPU,
// checks_open, and a shape whose bits it has been seen to match.
bool heads_take(const Tensor& A, const Tensor& X) {
  if (!(heads_cpu() && checks_open() && A.is_cpu() && X.is_cpu() && A.scalar_type() == at::kFloat &&
        X.scalar_type() == at::kFloat && A.dim() == 3 && X.dim() == 3 && X.stride(2) == 1 &&
        A.size(0) == X.size(0) && A.size(2) == X.size(1) && A.size(1) > 0 && X.size(2) > 0 && A.size(2) > 0))
    return false;
  return heads_match(A, X);
}

// Whether bmm(W, x^T) then ATen's add of the bias gives baddbmm(bias, W, x^T)'s bits for x's and
// W's shape and strides (the batch's stride aside, and its size but for a batch of one): float32
// CPU tensors, W's rows and the bias contiguous, checks_open.
bool bias_after(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (!(checks_open() && x.is_cpu() && weight.is_cpu() && bias.is_cpu() && x.scalar_type() == at::kFloat &&
        weight.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat && x.dim() == 3 &&
        weight.dim() == 2 && bias.dim() == 1 && weight.stride(1) == 1 && bias.stride(0) == 1 &&
        weight.size(0) == bias.size(0) && weight.size(1) == x.size(2) && x.numel() > 0 && weight.numel() > 0))
    return false;
  const int64_t O = weight.size(0), I = weight.size(1), N = x.size(1);
  const int64_t kItems = x.size(0) == 1 ? 1 : 2;
  return checked_once({1, O, I, N, x.stride(1), x.stride(2), weight.stride(0), kItems}, [&] {
    uint64_t draw = 20261207;
    Tensor tw = random_strided({O, I}, {weight.stride(0), 1}, draw);
    Tensor tb = random_strided({O}, {1}, draw);
    const int64_t x_item = (N - 1) * x.stride(1) + (I - 1) * x.stride(2) + 1;
    Tensor tx = random_strided({kItems, N, I}, {x_item, x.stride(1), x.stride(2)}, draw);
    Tensor w3 = tw.expand({kItems, -1, -1}), xT = tx.transpose(1, 2);
    return same_bits(at::baddbmm(tb.view({-1, 1}), w3, xT), at::bmm(w3, xT).add_(tb.view({-1, 1})));
  });
}

// Whether mm(A, Bm) then ATen's add of the bias gives addmm(bias, A, Bm)'s bits for A's and Bm's
// shape and strides (the FFN's second linear map, whose bias bias_mul_add_ then adds): float32
// CPU tensors, checks_open.
bool addmm_bias_after(const Tensor& A, const Tensor& Bm, const Tensor& bias) {
  if (!(checks_open() && A.is_cpu() && Bm.is_cpu() && bias.is_cpu() && A.scalar_type() == at::kFloat &&
        Bm.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat && A.dim() == 2 && Bm.dim() == 2 &&
        bias.dim() == 1 && A.size(1) == Bm.size(0) && bias.size(0) == Bm.size(1) && A.numel() > 0 &&
        Bm.numel() > 0))
    return false;
  const int64_t M = A.size(0), K = A.size(1), N = Bm.size(1);
  return checked_once({2, M, K, N, A.stride(0), A.stride(1), Bm.stride(0), Bm.stride(1)}, [&] {
    uint64_t draw = 20261208;
    Tensor ta = random_strided(A.sizes(), A.strides(), draw), tb = random_strided(Bm.sizes(), Bm.strides(), draw);
    Tensor tc = random_strided({N}, {1}, draw);
    return same_bits(at::addmm(tc, ta, tb), at::mm(ta, tb).add_(tc));
  });
}

// phi by rows. ATen's float32 exp2_ on a contiguous tensor, in one piece (one intra-op thread,
// or fewer elements than its grain), gives every element Sleef's exp2f16_u10 (its AVX-512 vector
// body, two vectors of 16 at a time) but the last n mod 32, which its scalar tail gives
// std::exp2: the two differ in the last bit on about 6 % of phi's exponents. phi_row applies the
// same two functions by the same positions (Sleef's is the one libtorch_cpu exports and ATen's
// vector code calls; its lanes are independent, so a vector's place does not matter), so phi's
// two loops and the exponential between them become one pass over a row, in AVX-512 vectors,
// with the loops' operations in their order. It is taken only where a check, once per process
// and ATen state, finds the operators' bits: on inputs whose exponents the two functions round
// differently, in a tensor with a tail, by rows that cross the vector body's end.
#if RMAAT_HEADS
extern "C" __m512 Sleef_exp2f16_u10(__m512) __attribute__((weak));   // null where torch lacks it

template <bool kB, bool kM, bool kA>
RMAAT_AVX512 void phi_row_avx512(const float* __restrict__ x, float br, const float* __restrict__ mk,
                                 const float* __restrict__ pr, float* __restrict__ y, float* __restrict__ a,
                                 int64_t C, int64_t body) {
  const __m512 zero = _mm512_setzero_ps(), log2e = _mm512_set1_ps(static_cast<float>(kLog2e)),
               bias = _mm512_set1_ps(br);
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 k = C - c >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (C - c)) - 1);
    __m512 xv = _mm512_maskz_loadu_ps(k, x + c);
    if constexpr (kB) xv = _mm512_add_ps(xv, bias);
    // min(x, 0) * log2(e): x where x > 0 is false (a NaN and -0 kept), as min_keep
    const __m512 e = _mm512_mul_ps(_mm512_mask_blend_ps(_mm512_cmp_ps_mask(xv, zero, _CMP_GT_OQ), xv, zero), log2e);
    __m512 t = Sleef_exp2f16_u10(e);
    if (body < std::min<int64_t>(c + 16, C)) {   // lanes of the row in exp2_'s scalar tail
      alignas(64) float ev[16], tv[16];
      _mm512_store_ps(ev, e);
      _mm512_store_ps(tv, t);
      for (int64_t j = std::max<int64_t>(body - c, 0); j < std::min<int64_t>(16, C - c); ++j) tv[j] = std::exp2(ev[j]);
      t = _mm512_load_ps(tv);
    }
    // + max(x, 0): x where x < 0 is false, as max_keep; then times the mask
    __m512 v = _mm512_add_ps(t, _mm512_mask_blend_ps(_mm512_cmp_ps_mask(xv, zero, _CMP_LT_OQ), xv, zero));
    if constexpr (kM) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, mk + c));
    _mm512_mask_storeu_ps(y + c, k, v);
    if constexpr (kA) _mm512_mask_storeu_ps(a + c, k, _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, pr + c)));
  }
}
#endif

template <bool kB, bool kM, bool kA>
void phi_row(const float* x, float br, const float* mk, const float* pr, float* y, float* a, int64_t C,
             int64_t body) {
#if RMAAT_HEADS
  phi_row_avx512<kB, kM, kA>(x, br, mk, pr, y, a, C, body);
#else
  (void)x; (void)br; (void)mk; (void)pr; (void)y; (void)a; (void)C; (void)body;
  TORCH_CHECK(false, "phi_row: needs the AVX-512 build");
#endif
}

bool phi_rows_match() {
#if RMAAT_HEADS
  if (Sleef_exp2f16_u10 == nullptr) return false;
  return checked_once({3}, [] {
    // inputs <= 0 whose exponents the vector and the scalar function round differently: a
    // position given the wrong function then shows
    const float log2e = static_cast<float>(kLog2e);
    std::vector<float> odd;
    uint64_t draw = 20261206;
    for (int tries = 0; tries < (1 << 20) && odd.size() < 64; ++tries) {
      const float x = -static_cast<float>(next_bits24(draw)) * 0x1p-20f;   // [-16, 0]
      float vec = 0;
      phi_row<false, false, false>(&x, 0.0f, nullptr, nullptr, &vec, nullptr, 1, 1);
      const float sca = std::exp2(x * log2e);
      if (std::memcmp(&vec, &sca, sizeof vec) != 0) odd.push_back(x);
    }
    if (odd.size() < 64) return false;
    constexpr int64_t kN = 32 * 4 + 21, kRow = 10;   // a tail of 21; rows that cross the body's end
    Tensor t = at::empty({kN}, at::TensorOptions().dtype(at::kFloat));
    for (int64_t i = 0; i < kN; ++i) t.data_ptr<float>()[i] = odd[i % odd.size()];
    Tensor ours = at::empty({kN}, t.options());
    for (int64_t i = 0; i < kN; i += kRow)
      phi_row<false, false, false>(t.data_ptr<float>() + i, 0.0f, nullptr, nullptr, ours.data_ptr<float>() + i,
                                   nullptr, std::min(kRow, kN - i), std::clamp<int64_t>(kN - kN % 32 - i, 0, kRow));
    Tensor theirs = at::clamp_max(t, 0.0).mul_(scalar(kLog2e, at::kFloat)).exp2_();
    theirs.add_(at::clamp_min(t, 0.0));
    return same_bits(theirs, ours);
  });
#else
  return false;
#endif
}

bool phi_rows_take(int64_t n) {
  return heads_cpu() && checks_open() && (at::get_num_threads() == 1 || n < at::internal::GRAIN_SIZE) &&
         phi_rows_match();
}

// The normaliser's gradient. astro_backward's dY = [dnum | dC]: dnum = dout / C, then
// dC = -sum over the head's rows of dnum * yT, with ATen's div, mul, sum and neg_ (three passes
// and a temporary, dout read in its transposed layout). ATen's float32 sum over those rows
// (an outer reduction, each column's rows apart) adds them in one of two orders by column: the
// columns in its blocks of 32 (of 4 in a window under 8 columns) in a cascade (rows added one by one from zero, each run of 16 rows'
// total then carried into a second accumulator, every 16 such runs into a third, and so on; the
// accumulators added last to first), the rest of the columns in four interleaved partial sums
// (rows 4g + k into partial k, each a cascade over g; the rows past the last group of four into
// partial 0; then the partials added in order). dyt_loop makes dnum, the products and their sum
// in that order in one pass per item, 16 columns at a time, for a layout where one check per
// process and ATen state (at one thread, or under ATen's grain: one serial reduction) finds
// the operators' bits on random numbers.
#if RMAAT_HEADS
struct Cascade {   // one sum in the cascade's order, 16 lanes (a column each)
  __m512 a0, a1, a2, a3;
  int64_t n;
};

RMAAT_AVX512 inline Cascade cascade_start() {
  const __m512 z = _mm512_setzero_ps();
  return {z, z, z, z, 0};
}

RMAAT_AVX512 inline void cascade_add(Cascade& s, __m512 p) {
  const __m512 z = _mm512_setzero_ps();
  s.a0 = _mm512_add_ps(s.a0, p);
  if (++s.n % 16 != 0) return;
  s.a1 = _mm512_add_ps(s.a1, s.a0);
  s.a0 = z;
  if ((s.n & 0xF0) != 0) return;
  s.a2 = _mm512_add_ps(s.a2, s.a1);
  s.a1 = z;
  if ((s.n & 0xF00) != 0) return;
  s.a3 = _mm512_add_ps(s.a3, s.a2);
  s.a2 = z;
}

RMAAT_AVX512 inline __m512 cascade_total(const Cascade& s) {
  return _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s.a0, s.a1), s.a2), s.a3);
}

// One item's dY: rows 0..m-1 of o = d / cb and row m = -sum_i dnum_i y_i (d's row i at d + i dr,
// its columns ds apart; cb's, y's (rows yr apart) and o's (rows orr apart) columns contiguous).
RMAAT_AVX512 void dyt_item(const float* d, int64_t dr, int64_t ds, const float* cb, const float* y, int64_t yr,
                           float* o, int64_t orr, int64_t m, int64_t Wq) {
  // the columns summed in the cascade (ATen's blocks of four 8-wide vectors, or of four columns
  // where there are fewer than 8); the rest interleaved
  const int64_t cascaded = Wq >= 8 ? 32 * (Wq / 32) : 4 * (Wq / 4);
  const int64_t groups = m / 4;
  const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(ds)));
  for (int64_t c = 0; c < Wq; c += 16) {
    const __mmask16 k = Wq - c >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (Wq - c)) - 1);
    const __m512 cv = _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), k, cb + c);
    // the block's lanes summed in the cascade (those before `cascaded`) and interleaved (the rest)
    const int64_t n_cascade = std::clamp<int64_t>(cascaded - c, 0, 16);
    const bool cascade = n_cascade > 0, interleave = c + n_cascade < Wq;
    Cascade whole = cascade_start(), part[4] = {cascade_start(), cascade_start(), cascade_start(), cascade_start()};
    __m512 rest = _mm512_setzero_ps();   // interleaved: partial 0, then the rows past the groups
    for (int64_t i = 0; i < m; ++i) {
      const float* di = d + i * dr + c * ds;
      const __m512 dv = ds == 1 ? _mm512_maskz_loadu_ps(k, di)
                                : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, lanes, di, 4);
      const __m512 dn = _mm512_div_ps(dv, cv);
      _mm512_mask_storeu_ps(o + i * orr + c, k, dn);
      const __m512 p = _mm512_mul_ps(dn, _mm512_maskz_loadu_ps(k, y + i * yr + c));
      if (cascade) cascade_add(whole, p);
      if (interleave) {
        if (i < 4 * groups) {
          cascade_add(part[i % 4], p);
        } else {
          if (i == 4 * groups) rest = cascade_total(part[0]);
          rest = _mm512_add_ps(rest, p);
        }
      }
    }
    __m512 sum = cascade ? cascade_total(whole) : _mm512_setzero_ps();
    if (interleave) {
      if (m == 4 * groups) rest = cascade_total(part[0]);
      const __m512 inter = _mm512_add_ps(
          _mm512_add_ps(_mm512_add_ps(rest, cascade_total(part[1])), cascade_total(part[2])), cascade_total(part[3]));
      const __mmask16 from_cascade = static_cast<__mmask16>((1u << n_cascade) - 1);
      sum = _mm512_mask_blend_ps(from_cascade, inter, sum);
    }
    const __m512 neg = _mm512_castsi512_ps(
        _mm512_xor_si512(_mm512_castps_si512(sum), _mm512_set1_epi32(static_cast<int>(0x80000000u))));
    _mm512_mask_storeu_ps(o + m * orr + c, k, neg);
  }
}

// dyt_item for every item: dout's row i of item bh at dout.base(bh) + i dout.sr, its columns ds
// apart; items split among ATen's intra-op threads.
void dyt_loop(const Plane& dout, int64_t ds, const Plane& C, const Plane& yT, const Plane& out, int64_t BH,
              int64_t m, int64_t Wq) {
  at::parallel_for(0, BH, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t bh = lo; bh < hi; ++bh)
      dyt_item(dout.base(bh), dout.sr, ds, C.base(bh), yT.base(bh), yT.sr, out.base(bh), out.sr, m, Wq);
  });
}
#endif

// dYT's rows by ATen's operators (astro_backward's Python path): dYT (B, nh, m + 1, Wq)
void dyt_aten(Tensor& dYT, const Tensor& dout, const Tensor& C, const Tensor& yT, int64_t nh) {
  const int64_t B = dYT.size(0), m = dYT.size(2) - 1, Wq = dYT.size(3);
  Tensor dnum = dYT.slice(2, 0, m), dC = dYT.slice(2, m);
  at::div_out(dnum, dout.view({B, nh, m, Wq}), C.view({B, nh, 1, Wq}));
  at::sum_out(dC, dnum * yT.view({B, nh, m, Wq}), {2}, true).neg_();
}

#if RMAAT_HEADS
// dyt_loop on astro_backward's tensors: dout (B, nh m, Wq), C (B nh, 1, Wq), yT (B nh, m, Wq)
void dyt_apply(Tensor& dYT, const Tensor& dout, const Tensor& C, const Tensor& yT, int64_t nh) {
  const int64_t B = dYT.size(0), m = dYT.size(2) - 1, Wq = dYT.size(3);
  const Tensor o = dYT.view({B * nh, m + 1, Wq});
  dyt_loop(head_rows(dout, nh, m), dout.stride(2), item_rows(C), item_rows(yT), item_rows(o), B * nh, m, Wq);
}
#endif

// Whether dyt_loop gives dyt_aten's bits here: float32 CPU tensors, C's and yT's columns
// contiguous, a fresh contiguous dYT, checks_open, one serial reduction, and a layout whose bits it
// has been seen to match.
bool dyt_take(const Tensor& dYT, const Tensor& dout, const Tensor& C, const Tensor& yT, int64_t nh) {
#if RMAAT_HEADS
  const int64_t B = dYT.size(0), m = dYT.size(2) - 1, Wq = dYT.size(3);
  auto f32 = [](const Tensor& t) { return t.is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 3; };
  if (!(heads_cpu() && checks_open() && f32(dout) && f32(C) && f32(yT) && dYT.scalar_type() == at::kFloat &&
        dYT.is_contiguous() && m > 0 && m <= 4096 && Wq > 0 && dout.size(0) == B && dout.size(1) == nh * m &&
        dout.size(2) == Wq && C.size(0) == B * nh && C.size(1) == 1 && C.size(2) == Wq && C.stride(2) == 1 &&
        yT.size(0) == B * nh && yT.size(1) == m && yT.size(2) == Wq && yT.stride(2) == 1 &&
        dout.stride(2) > 0 && dout.stride(2) * 16 < (int64_t{1} << 31) &&
        at::has_internal_overlap(dout) != at::MemOverlap::Yes &&   // the check writes its copy of the layout
        (at::get_num_threads() == 1 || B * nh * m * Wq < at::internal::GRAIN_SIZE)))
    return false;
  return checked_once({4, nh, m, Wq, dout.stride(1), dout.stride(2), yT.stride(1)}, [&] {
    // gradients spread over powers of two from 2^-8 to 2^8 (so that most sums' bits depend on
    // their order), a normaliser in [0.5, 1.5) as C's are positive
    uint64_t draw = 20261206;
    constexpr int64_t kB = 4;
    const int64_t span = (nh * m - 1) * dout.stride(1) + (Wq - 1) * dout.stride(2) + 1;
    Tensor td = random_strided({kB, nh * m, Wq}, {span, dout.stride(1), dout.stride(2)}, draw);
    td.mul_(at::exp2(at::round(random_strided({kB, nh * m, Wq}, {nh * m * Wq, Wq, 1}, draw) * 8)));
    Tensor tc = random_strided({kB * nh, 1, Wq}, {Wq, Wq, 1}, draw).abs_().add_(0.5);
    Tensor ty = random_strided({kB * nh, m, Wq}, {(m - 1) * yT.stride(1) + Wq, yT.stride(1), 1}, draw);
    Tensor theirs = at::empty({kB, nh, m + 1, Wq}, td.options()), ours = at::empty_like(theirs);
    dyt_aten(theirs, td, tc, ty, nh);
    dyt_apply(ours, td, tc, ty, nh);
    return same_bits(theirs, ours);
  });
#else
  (void)dYT; (void)dout; (void)C; (void)yT; (void)nh;
  return false;
#endif
}

// astro_backward's dY rows into dYT (B, nh, m + 1, Wq): by dyt_loop where dyt_take lets it, else
// by ATen's operators.
void normaliser_grad_into(Tensor& dYT, const Tensor& dout, const Tensor& C, const Tensor& yT, int64_t nh) {
#if RMAAT_HEADS
  if (dyt_take(dYT, dout, C, yT, nh)) {
    dyt_apply(dYT, dout, C, yT, nh);
    return;
  }
#endif
  dyt_aten(dYT, dout, C, yT, nh);
}

// The extension's checked_products(enabled=None, forget=False): switch the checked loops on or
// off for the process (None: leave them as they are), forget the shapes checked so far (each is
// checked again at its next product), and say where they stand: (enabled, the CPU has AVX-512
// (the heads' loop needs it), shapes matched, shapes refused).
std::tuple<bool, bool, int64_t, int64_t> checked_products(std::optional<bool> enabled, bool forget) {
  Checked& st = checked();
  std::lock_guard<std::mutex> hold(st.lock);
  if (enabled) st.enabled.store(*enabled);
  if (forget) st.shapes.clear();
  int64_t good = 0, bad = 0;
  for (const auto& kv : st.shapes) (kv.second ? good : bad) += 1;
  return {st.enabled.load(), heads_cpu(), good, bad};
}

// kernels.project_t: x (B, W, D_in) -> (B, D_out, W)
Tensor project_t(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  return at::baddbmm(bias.view({-1, 1}), weight.expand({x.size(0), -1, -1}), x.transpose(1, 2));
}

// project_t's product, and the bias still to add where bias_after lets the readers add it (else
// none: the product has it)
std::pair<Tensor, OptTensor> project_t_bias_after(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (bias_after(x, weight, bias))
    return {at::bmm(weight.expand({x.size(0), -1, -1}), x.transpose(1, 2)), bias};
  return {project_t(x, weight, bias), std::nullopt};
}

// kernels.astro_forward: yT (B, D, Wq) and the ten tensors its backward reads. q_bias (D) and
// kv_bias (2 D): the projection's bias still to add to qT's and kvT's rows (project_t_bias_after).
std::pair<Tensor, std::vector<Tensor>> astro_forward(const Tensor& qT, const Tensor& kvT, const OptTensor& mask,
                                                     const OptTensor& phi_rT, double alpha, int64_t nh,
                                                     const OptTensor& q_bias = std::nullopt,
                                                     const OptTensor& kv_bias = std::nullopt) {
  const int64_t B = qT.size(0), D = qT.size(1), Wq = qT.size(2), W = kvT.size(-1);
  const int64_t m = D / nh, BH = B * nh;
  Tensor fqT = phi_kernel(qT, std::nullopt, q_bias).view({BH, m, Wq});
  // phi(K), 0 at padding (in every sum), and aT = phi(K) + phi(R) (B nh, hs, W)
  const OptTensor k_bias = kv_bias ? OptTensor(kv_bias->slice(0, 0, D)) : std::nullopt;
  const OptTensor v_bias = kv_bias ? OptTensor(kv_bias->slice(0, D)) : std::nullopt;
  auto [fk, ak] = phi_kernel_a(kvT.slice(1, 0, D), mask, phi_rT, m, k_bias);
  Tensor fkT = fk.view({BH, m, W});
  Tensor vT = values_t(kvT.slice(1, D), mask, v_bias).view({BH, m, W});
  Tensor s = fkT.sum(-1, true);
  Tensor g = s.pow(scalar(alpha, s.scalar_type()));
  Tensor aT = phi_rT ? ak.view({BH, m, W}) : fkT;
  Tensor H = at::cat(std::vector<Tensor>{at::bmm(aT, vT.transpose(1, 2)), g * scalar(static_cast<double>(m), g.scalar_type())}, 2);
  Tensor HT = H.transpose(1, 2), C, yT;
  if (heads_take(HT, fqT)) {   // the normaliser's row first, then the rows divided by it
#if RMAAT_HEADS
    C = at::empty({BH, 1, Wq}, fqT.options());
    yT = at::empty({BH, m, Wq}, fqT.options());
    heads_apply(HT, fqT, m, m + 1, StoreOut{item_rows(C)});
    heads_apply(HT, fqT, 0, m, DivideOut{item_rows(yT), item_rows(C)});
#endif
  } else {
    Tensor YT = at::bmm(HT, fqT);
    C = YT.slice(1, m);
    yT = YT.slice(1, 0, m) / C;
  }
  // saved: fqT, fkT, aT, vT, s, g, H, yT, C (the mask travels apart: it may be None)
  return {yT.view({B, D, Wq}), {fqT, fkT, aT, vT, s, g, H, yT, C}};
}

// kernels.astro_backward (its direct path): (dqT, dpT), dpT [Q | K | V] with q_rows, else [K | V]
std::pair<Tensor, Tensor> astro_backward(const std::vector<Tensor>& sv, size_t at0, const OptTensor& mask,
                                         const Tensor& dout, double alpha, bool q_rows) {
  const Tensor &fqT = sv[at0], &fkT = sv[at0 + 1], &aT = sv[at0 + 2], &vT = sv[at0 + 3], &s = sv[at0 + 4],
               &g = sv[at0 + 5], &H = sv[at0 + 6], &yT = sv[at0 + 7], &C = sv[at0 + 8];
  const int64_t BH = fqT.size(0), m = fqT.size(1), Wq = fqT.size(2), W = fkT.size(-1);
  const int64_t B = dout.size(0), nh = BH / B, D = dout.size(1);
  Tensor dYT = at::empty({B, nh, m + 1, Wq},
                         dout.options().dtype(at::promote_types(dout.scalar_type(), C.scalar_type())));
  normaliser_grad_into(dYT, dout, C, yT, nh);
  dYT = dYT.view({BH, m + 1, Wq});
  Tensor dH = at::bmm(fqT, dYT.transpose(1, 2));
  Tensor dHn = dH.slice(2, 0, m), dg = dH.slice(2, m);
  Tensor dk_bias = dg * scalar(static_cast<double>(m) * alpha, dg.scalar_type()) * g / s;
  Tensor out = fkT.new_empty({B, (q_rows ? 3 : 2) * D, W});
  const int64_t k0 = q_rows ? D : 0;
  Tensor dq_dst = q_rows ? out.slice(1, 0, D).slice(2, 0, Wq) : Tensor();
  Tensor dk_dst = out.slice(1, k0, k0 + D), dv_dst = out.slice(1, k0 + D);
  Tensor dHnT = dHn.transpose(1, 2);
  // phi'(x) = min(phi(x), 1) (0 where masked) times the gradients, as the projection lays them out
  Tensor dq;
  if (fqT.stride(2) == 1 && heads_take(H, dYT)) {
#if RMAAT_HEADS
    if (!q_rows) dq_dst = at::empty({B, D, Wq}, fqT.options());
    heads_apply(H, dYT, 0, m, DphiOut{head_rows(dq_dst, nh, m), item_rows(fqT), Plane{}});
    dq = dq_dst;
#endif
  } else {
    Tensor dfq = at::bmm(H, dYT).view({B, D, Wq});
    if (q_rows) {
      mul_dphi_out(dq_dst, dfq, fqT.view({B, D, Wq}));
      dq = dq_dst;
    } else {
      mul_dphi_out(dfq, dfq, fqT.view({B, D, Wq}));
      dq = dfq;
    }
  }
  if (q_rows && Wq < W) out.slice(1, 0, D).slice(2, Wq).zero_();
  const bool mask_rows = !mask || (mask->scalar_type() == at::kFloat && mask->dim() == 3 && mask->size(0) == B &&
                                   mask->size(1) == 1 && mask->size(2) == W && (mask->stride(2) == 1 || W == 1));
  if (fkT.stride(2) == 1 && dk_bias.scalar_type() == at::kFloat && dk_bias.dim() == 3 && heads_take(dHn, vT)) {
#if RMAAT_HEADS
    heads_apply(dHn, vT, 0, m, DphiOut{head_rows(dk_dst, nh, m), item_rows(fkT), item_rows(dk_bias)});
#endif
  } else {
    Tensor dfkT = at::bmm(dHn, vT).add_(dk_bias);
    mul_dphi_out(dk_dst, dfkT.view({B, D, W}), fkT.view({B, D, W}));
  }
  if (mask_rows && heads_take(dHnT, aT)) {
#if RMAAT_HEADS
    heads_apply(dHnT, aT, 0, m, MaskOut{head_rows(dv_dst, nh, m), mask ? sequence_row(*mask, nh) : Plane{}});
#endif
  } else {
    Tensor dvT = at::bmm(dHnT, aT).view({B, D, W});
    if (mask) at::mul_out(dv_dst, dvT, *mask); else dv_dst.copy_(dvT);
  }
  return {dq, out};
}

// fused_block.block_forward with every tensor in one dtype. Returns y and the saved tensors,
// laid out [xc, w_qkv, w_o, g1, c1, w1, w2, g2, c2, h1, mu1, rs1, x1c, u, gu, h2, mu2, rs2, yT,
// fqT, fkT, aT, vT, s, g, H, yT_heads, C]; m1, m2 and the mask (each may be None) are the
// caller's to keep.
std::vector<Tensor> block_forward(const Tensor& x, const Tensor& w_qkv, const Tensor& b_qkv, const Tensor& w_o,
                                  const Tensor& b_o, const Tensor& g1, const Tensor& c1, const Tensor& w1,
                                  const Tensor& bf1, const Tensor& w2, const Tensor& bf2, const Tensor& g2,
                                  const Tensor& c2, const OptTensor& mask, const OptTensor& phi_rT,
                                  const OptTensor& m1, const OptTensor& m2, double alpha, int64_t n_heads,
                                  int64_t n_query, double eps) {
  const int64_t B = x.size(0), W = x.size(1), D = x.size(2), Wq = n_query;
  Tensor xr = Wq == W ? x : x.slice(1, 0, Wq);
  Tensor qT, kvT;
  OptTensor q_bias, kv_bias;   // the projection's bias, where its readers add it
  if (Wq == W) {
    auto [qkvT, bias] = project_t_bias_after(x, w_qkv, b_qkv);
    qT = qkvT.slice(1, 0, D);
    kvT = qkvT.slice(1, D);
    if (bias) {
      q_bias = bias->slice(0, 0, D);
      kv_bias = bias->slice(0, D);
    }
  } else {
    std::tie(qT, q_bias) = project_t_bias_after(x.slice(1, 0, Wq), w_qkv.slice(0, 0, D), b_qkv.slice(0, 0, D));
    std::tie(kvT, kv_bias) = project_t_bias_after(x, w_qkv.slice(0, D), b_qkv.slice(0, D));
  }
  auto [yT, saved] = astro_forward(qT, kvT, mask, phi_rT, alpha, n_heads, q_bias, kv_bias);
  // unproject_t's product; its bias, the dropout mask and the residual in one loop
  Tensor a = at::bmm(yT.transpose(1, 2), w_o.transpose(0, 1).expand({yT.size(0), -1, -1}));
  Tensor h1 = bias_mul_add_(a, b_o, m1, xr);
  auto [x1, mu1, rs1] = at::native_layer_norm(h1, {D}, g1, c1, eps);
  Tensor x1f = x1.view({-1, D});
  Tensor u = at::addmm(bf1, x1f, w1.t());
  Tensor gu = at::gelu(u);
  Tensor h2;
  if (addmm_bias_after(gu, w2.t(), bf2)) {   // its bias with the dropout mask and the residual
    Tensor f = at::mm(gu, w2.t()).view({B, Wq, D});
    h2 = bias_mul_add_(f, bf2, m2, x1);
  } else {
    Tensor f = at::addmm(bf2, gu, w2.t()).view({B, Wq, D});
    h2 = m2 ? mul_add_(f, *m2, x1) : f.add_(x1);
  }
  auto [y, mu2, rs2] = at::native_layer_norm(h2, {D}, g2, c2, eps);
  std::vector<Tensor> out{y, x, w_qkv, w_o, g1, c1, w1, w2, g2, c2, h1, mu1, rs1, x1f, u, gu, h2, mu2, rs2, yT};
  out.insert(out.end(), saved.begin(), saved.end());
  return out;
}

// FusedBlock.backward with every tensor in one dtype: sv is block_forward's saved list (its
// output without y). Returns the gradients of x, w_qkv, b_qkv, w_o, b_o, g1, c1, w1, bf1, w2,
// bf2, g2, c2.
std::vector<Tensor> block_backward(const Tensor& dy_in, const std::vector<Tensor>& sv, const OptTensor& mask,
                                   const OptTensor& m1, const OptTensor& m2, double alpha) {
  const Tensor &xc = sv[0], &w_qkv = sv[1], &w_o = sv[2], &g1 = sv[3], &c1 = sv[4], &w1 = sv[5], &w2 = sv[6],
               &g2 = sv[7], &c2 = sv[8], &h1 = sv[9], &mu1 = sv[10], &rs1 = sv[11], &x1c = sv[12], &u = sv[13],
               &gu = sv[14], &h2 = sv[15], &mu2 = sv[16], &rs2 = sv[17], &yT = sv[18];
  const int64_t B = xc.size(0), W = xc.size(1), D = xc.size(2), Wq = h1.size(1);
  const std::array<bool, 3> all{true, true, true};
  auto [dh2, dg2, dc2] = at::native_layer_norm_backward(dy_in.contiguous(), h2, {D}, mu2, rs2, g2, c2, all);
  Tensor dh2f = dh2.view({-1, D});
  Tensor df = m2 ? dh2f * m2->view({-1, D}) : dh2f;
  Tensor dbf2 = df.sum(0);
  Tensor dw2 = at::mm(df.t(), gu);
  Tensor du = at::gelu_backward(at::mm(df, w2), u);
  Tensor dw1 = at::mm(du.t(), x1c), dbf1 = du.sum(0);
  Tensor dx1 = at::addmm(dh2f, du, w1).view({B, Wq, D});
  auto [dh1, dg1, dc1] = at::native_layer_norm_backward(dx1, h1, {D}, mu1, rs1, g1, c1, all);
  Tensor da = m1 ? dh1 * *m1 : dh1;
  Tensor db_o = da.sum({0, 1});
  Tensor dw_o = at::bmm(da.transpose(1, 2), yT.transpose(1, 2)).sum(0);
  Tensor dyT = at::mm(da.view({-1, D}), w_o).view({B, Wq, D}).transpose(1, 2);
  auto [dqT, dpT] = astro_backward(sv, 19, mask, dyT, alpha, Wq == W);
  Tensor dw_qkv, db_qkv, dx;
  if (Wq == W) {
    dw_qkv = at::bmm(dpT, xc).sum(0);
    db_qkv = dpT.sum({0, 2});
    dx = at::bmm(dpT.transpose(1, 2), w_qkv.expand({B, -1, -1}));
    dx.add_(dh1);
  } else {
    Tensor xq = xc.slice(1, 0, Wq);
    dw_qkv = at::cat(std::vector<Tensor>{at::bmm(dqT, xq).sum(0), at::bmm(dpT, xc).sum(0)});
    db_qkv = at::cat(std::vector<Tensor>{dqT.sum({0, 2}), dpT.sum({0, 2})});
    dx = at::bmm(dpT.transpose(1, 2), w_qkv.slice(0, D).expand({B, -1, -1}));
    Tensor dxq = at::bmm(dqT.transpose(1, 2), w_qkv.slice(0, 0, D).expand({B, -1, -1}));
    dx.slice(1, 0, Wq).add_(dxq.add_(dh1));
  }
  return {dx, dw_qkv, db_qkv, dw_o, db_o, dg1, dc1, dw1, dbf1, dw2, dbf2, dg2, dc2};
}

// Where a graph of the gradients is asked for (create_graph): as Python's once_differentiable,
// the gradients get a node that refuses to be differentiated, where differentiating the
// written-out backward's operators would give a wrong second derivative.
void refuse_second_derivative(std::vector<Tensor>& g) {
  torch::autograd::variable_list leaves;
  for (const Tensor& t : g) leaves.push_back(t.detach().requires_grad_(true));
  auto refuse = c10::make_intrusive<torch::autograd::Error>(
      "trying to differentiate twice a function that was marked with @once_differentiable",
      torch::autograd::collect_next_edges(leaves));
  for (const Tensor& t : g) torch::autograd::set_history(t, refuse);
}

// FusedBlock as a C++ autograd node: its forward and backward above, with no Python between
// them (the Function's context, the saving and unpacking of some thirty tensors).
struct FusedBlock : public torch::autograd::Function<FusedBlock> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& w_qkv,
                        const Tensor& b_qkv, const Tensor& w_o, const Tensor& b_o, const Tensor& g1, const Tensor& c1,
                        const Tensor& w1, const Tensor& bf1, const Tensor& w2, const Tensor& bf2, const Tensor& g2,
                        const Tensor& c2, const OptTensor& mask, const OptTensor& phi_rT, const OptTensor& m1,
                        const OptTensor& m2, double alpha, int64_t n_heads, int64_t n_query, double eps) {
    std::vector<Tensor> out = block_forward(x, w_qkv, b_qkv, w_o, b_o, g1, c1, w1, bf1, w2, bf2, g2, c2, mask,
                                            phi_rT, m1, m2, alpha, n_heads, n_query, eps);
    Tensor y = out[0];
    // saved: [mask, m1, m2, block_forward's saved list]; an absent one is an undefined tensor
    out[0] = mask ? *mask : Tensor();
    out.insert(out.begin() + 1, {m1 ? *m1 : Tensor(), m2 ? *m2 : Tensor()});
    ctx->save_for_backward(out);
    ctx->saved_data["alpha"] = alpha;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    std::vector<Tensor> sv = ctx->get_saved_variables();
    auto opt = [](const Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); };
    OptTensor mask = opt(sv[0]), m1 = opt(sv[1]), m2 = opt(sv[2]);
    sv.erase(sv.begin(), sv.begin() + 3);
    std::vector<Tensor> g;
    {
      at::NoGradGuard no_grad;
      g = block_backward(grads[0], sv, mask, m1, m2, ctx->saved_data["alpha"].toDouble());
    }
    if (torch::autograd::GradMode::is_enabled() && grads[0].requires_grad()) refuse_second_derivative(g);
    g.resize(g.size() + 8);   // mask, phi_rT, m1, m2 and the four numbers: no gradient
    return g;
  }
};

// ---------------------------------------------------------------- a segment's window (CPU)
//
// model.RMAAT.step's window x = [mem | (tok_emb(tokens) + pos_emb) * keep] (B, M + N, D): the
// embedding's rows, the position's sum and the dropout mask in one pass per row, each result
// rounded as the operators round it, and the memory rows copied in (Python: an embedding, an
// add, a product and a cat, each a pass with its own output). Its backward is autograd's for
// those operators: the memory's gradient is the window's first M rows (a view, as cat's
// backward gives it); the embedding's is the rest times the mask (ATen's mul); the position's,
// that summed over the batch (at::sum_to, as autograd reduces a broadcast operand's gradient);
// the embedding table's, the rows added into a zeroed table in the tokens' order, one row's
// gradient at a time, as ATen's dense embedding backward adds them (its own loop makes a call
// per token).
Tensor window_forward(const Tensor& mem, const Tensor& tokens, const Tensor& weight, const Tensor& pos,
                      const OptTensor& keep) {
  const auto dt = weight.scalar_type();
  TORCH_CHECK(mem.is_cpu() && mem.dim() == 3 && mem.scalar_type() == dt && tokens.is_cpu() && tokens.dim() == 2 &&
                  tokens.scalar_type() == at::kLong && tokens.size(0) == mem.size(0) && weight.is_cpu() &&
                  weight.dim() == 2 && weight.size(1) == mem.size(2) && pos.is_cpu() && pos.scalar_type() == dt &&
                  pos.dim() == 2 && pos.size(0) == tokens.size(1) && pos.size(1) == mem.size(2),
              "window: expected mem (B, M, D), tokens (B, N) int64, weight (V, D) and pos (N, D), one dtype, on the CPU");
  const int64_t B = mem.size(0), M = mem.size(1), N = tokens.size(1), D = mem.size(2), V = weight.size(0);
  TORCH_CHECK(!keep || (keep->is_cpu() && keep->scalar_type() == dt && keep->dim() == 3 && keep->size(0) == B &&
                        keep->size(1) == N && keep->size(2) == D),
              "window: expected the dropout mask (B, N, D) in the window's dtype");
  TORCH_CHECK(!keep || !keep->requires_grad(), "window: the dropout mask takes no gradient here (a constant)");
  const Tensor tok = tokens.contiguous(), w = weight.contiguous(), ps = pos.contiguous();
  const int64_t* tp = tok.data_ptr<int64_t>();
  for (int64_t i = 0; i < B * N; ++i)
    TORCH_CHECK(tp[i] >= 0 && tp[i] < V, "window: token id ", tp[i], " is outside the embedding's ", V, " rows");
  Tensor x = at::empty({B, M + N, D}, mem.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES(dt, "window", [&] {
    const scalar_t* mp = mem.data_ptr<scalar_t>();
    const int64_t m0 = mem.stride(0), m1 = mem.stride(1), m2 = mem.stride(2);
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const scalar_t* pp = ps.data_ptr<scalar_t>();
    const scalar_t* kp = keep ? keep->data_ptr<scalar_t>() : nullptr;
    const int64_t k0 = keep ? keep->stride(0) : 0, k1 = keep ? keep->stride(1) : 0, k2 = keep ? keep->stride(2) : 0;
    scalar_t* xp = x.data_ptr<scalar_t>();
    each_row(B, M + N, D, [&](int64_t b, int64_t r) {
      scalar_t* __restrict__ xi = xp + (b * (M + N) + r) * D;
      if (r < M) {
        const scalar_t* mi = mp + b * m0 + r * m1;
        for (int64_t d = 0; d < D; ++d) xi[d] = mi[d * m2];
        return;
      }
      const int64_t n = r - M;
      const scalar_t* __restrict__ wi = wp + tp[b * N + n] * D;
      const scalar_t* __restrict__ pi = pp + n * D;
      if (kp && k2 == 1) {
        const scalar_t* __restrict__ ki = kp + b * k0 + n * k1;
        for (int64_t d = 0; d < D; ++d) {
          const scalar_t e = wi[d] + pi[d];
          xi[d] = e * ki[d];
        }
      } else if (kp) {
        const scalar_t* ki = kp + b * k0 + n * k1;
        for (int64_t d = 0; d < D; ++d) {
          const scalar_t e = wi[d] + pi[d];
          xi[d] = e * ki[d * k2];
        }
      } else {
        for (int64_t d = 0; d < D; ++d) xi[d] = wi[d] + pi[d];
      }
    });
  });
  return x;
}

// The embedding table's gradient: grad (B, N, D) rows added into zeros (V, D) in the tokens'
// order, each sum rounded (ATen's embedding_dense_backward without padding_idx or scaling).
Tensor embedding_grad(const Tensor& grad, const Tensor& tokens, int64_t V) {
  const int64_t D = grad.size(-1), n = tokens.numel();
  const Tensor g = grad.contiguous().view({n, D}), tok = tokens.contiguous();
  Tensor out = at::zeros({V, D}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "embedding_grad", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const int64_t* tp = tok.data_ptr<int64_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < n; ++i) {
      scalar_t* __restrict__ row = op + tp[i] * D;
      const scalar_t* __restrict__ gi = gp + i * D;
      for (int64_t d = 0; d < D; ++d) row[d] = row[d] + gi[d];
    }
  });
  return out;
}

struct Window : public torch::autograd::Function<Window> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& mem, const Tensor& tokens,
                        const Tensor& weight, const Tensor& pos, const OptTensor& keep) {
    ctx->save_for_backward({tokens, keep ? *keep : Tensor()});
    ctx->saved_data["M"] = mem.size(1);
    ctx->saved_data["V"] = weight.size(0);
    return window_forward(mem, tokens, weight, pos, keep);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    std::vector<Tensor> sv = ctx->get_saved_variables();
    const Tensor &tokens = sv[0], &keep = sv[1];
    const int64_t M = ctx->saved_data["M"].toInt(), V = ctx->saved_data["V"].toInt();
    const Tensor& dx = grads[0];
    Tensor dmem, de, dw, dpos;
    {
      at::NoGradGuard no_grad;
      dmem = dx.slice(1, 0, M);
      de = dx.slice(1, M);
      if (keep.defined()) de = at::mul(de, keep);
      const std::vector<int64_t> pos_shape{de.size(1), de.size(2)};
      if (ctx->needs_input_grad(3)) dpos = at::sum_to(de, at::IntArrayRef(pos_shape));
      if (ctx->needs_input_grad(2)) dw = embedding_grad(de, tokens, V);
    }
    std::vector<Tensor> g;   // the defined ones
    for (const Tensor& t : {dmem, dw, dpos})
      if (t.defined()) g.push_back(t);
    if (torch::autograd::GradMode::is_enabled() && dx.requires_grad()) refuse_second_derivative(g);
    return {dmem, Tensor(), dw, dpos, Tensor()};
  }
};

// model.RMAAT.step's window: a graph node when grad mode is on, else the value alone.
Tensor window(const Tensor& mem, const Tensor& tokens, const Tensor& weight, const Tensor& pos,
              const OptTensor& keep) {
  if (torch::autograd::GradMode::is_enabled()) return Window::apply(mem, tokens, weight, pos, keep);
  return window_forward(mem, tokens, weight, pos, keep);
}

// The block on x: a graph node when grad mode is on, else the value alone (AMRB's no-grad
// pass, evaluation), as fused_block.fused_block does it.
Tensor block(const Tensor& x, const Tensor& w_qkv, const Tensor& b_qkv, const Tensor& w_o, const Tensor& b_o,
             const Tensor& g1, const Tensor& c1, const Tensor& w1, const Tensor& bf1, const Tensor& w2,
             const Tensor& bf2, const Tensor& g2, const Tensor& c2, const OptTensor& mask, const OptTensor& phi_rT,
             const OptTensor& m1, const OptTensor& m2, double alpha, int64_t n_heads, int64_t n_query, double eps) {
  if (torch::autograd::GradMode::is_enabled())
    return FusedBlock::apply(x, w_qkv, b_qkv, w_o, b_o, g1, c1, w1, bf1, w2, bf2, g2, c2, mask, phi_rT, m1, m2,
                               alpha, n_heads, n_query, eps);
  return block_forward(x, w_qkv, b_qkv, w_o, b_o, g1, c1, w1, bf1, w2, bf2, g2, c2, mask, phi_rT, m1, m2, alpha,
                       n_heads, n_query, eps)[0];
}

}  // namespace rmaat

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("block", &rmaat::block, "fused_block.fused_block's node, every tensor in one full-precision dtype",
          py::call_guard<py::gil_scoped_release>());
  mod.def("block_forward", &rmaat::block_forward, "fused_block.block_forward, one dtype: y and the saved tensors");
  mod.def("block_backward", &rmaat::block_backward, "FusedBlock.backward, one dtype");
  mod.def("phi", [](const Tensor& x, const OptTensor& mask) { return rmaat::phi_kernel(x, mask); },
          "kernels.phi_kernel(x), times mask (B, 1, W) when given (the fused loops' path on the CPU)");
  mod.def("phi_and_a", &rmaat::phi_kernel_a, py::arg("x"), py::arg("mask"), py::arg("phi_rT"), py::arg("m") = 1,
          py::arg("bias") = py::none(),
          "phi_kernel(x) times mask, and that plus phi_rT (m, W) broadcast over heads of size m "
          "(astro_forward's fkT, aT); with bias (R), of x + bias (row r plus bias[r])");
  mod.def("values", &rmaat::values_t, py::arg("v"), py::arg("mask"), py::arg("bias") = py::none(),
          "astro_forward's values: v times mask (B, 1, W) (or 1), with bias (R) (v + bias) times it");
  mod.def("window", &rmaat::window, py::arg("mem"), py::arg("tokens"), py::arg("weight"), py::arg("pos"),
          py::arg("keep"),
          "model.RMAAT.step's window [mem | (weight[tokens] + pos) * keep] (B, M + N, D), a graph node in grad mode");
  mod.def("normaliser_grad",
          [](const Tensor& dout, const Tensor& C, const Tensor& yT, int64_t nh) {
            TORCH_CHECK(dout.dim() == 3 && nh > 0 && dout.size(1) % nh == 0,
                        "normaliser_grad: expected dout (B, nh m, Wq) with nh > 0 dividing its rows, got ",
                        dout.sizes(), " and nh = ", nh);
            const int64_t B = dout.size(0), m = dout.size(1) / nh, Wq = dout.size(2);
            Tensor dYT = at::empty({B, nh, m + 1, Wq}, dout.options());
            rmaat::normaliser_grad_into(dYT, dout, C, yT, nh);
            return dYT;
          },
          py::arg("dout"), py::arg("C"), py::arg("yT"), py::arg("nh"),
          "astro_backward's dY = [dout / C | -sum over each head's rows of (dout / C) yT], (B, nh, m + 1, Wq), "
          "from dout (B, nh m, Wq), C (B nh, 1, Wq), yT (B nh, m, Wq): by the block's loop where its check "
          "matched, else ATen's operators");
  mod.def("checked_products", &rmaat::checked_products, py::arg("enabled") = py::none(), py::arg("forget") = false,
          "the block's checked loops (the heads' products, the linear maps' biases): switch them on or off "
          "for the process (None: leave them), forget the shapes checked; returns (enabled, the CPU has "
          "AVX-512, shapes matched to ATen's bits, shapes refused)", py::call_guard<py::gil_scoped_release>());
  mod.def("mul_dphi_out", &rmaat::mul_dphi_out, "out = d * min(f, 1) (the fused loop's path on the CPU)");
  mod.def("dropout_draw", &rmaat::dropout_draw,
          "kernels.dropout_masks' draw and {0, scale} values in one, from a CPU generator (None: the "
          "default one; bitwise random_ then dropout_keep)", py::arg("n"), py::arg("threshold"), py::arg("scale"),
          py::arg("dtype"), py::arg("generator") = py::none(), py::call_guard<py::gil_scoped_release>());
  mod.def("adamw_step", &rmaat::adamw_step,
          "optim.AdamW's step over its groups of dense float32 CPU tensors, bitwise torch.optim.AdamW's "
          "single-tensor path (false: not taken, nothing changed)", py::call_guard<py::gil_scoped_release>());
  mod.def("sum_grads", &rmaat::sum_grads,
          "shards._sum_grads: the replicas' weighted float32 gradients summed into the model's (false: not taken)",
          py::call_guard<py::gil_scoped_release>());
  mod.def("dropout_keep", &rmaat::dropout_keep,
          "kernels.dropout_masks' {0, scale} values from its int64 draw, full-precision dtypes",
          py::call_guard<py::gil_scoped_release>());
}
