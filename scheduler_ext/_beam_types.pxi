# C types of the scheduling round, included by _beam.pyx (see the package docstring).
#
# Why a .pxi and not _beam.pxd: the extension is built as ``aragog.scheduler_ext._beam`` from
# ``scheduler_ext/_beam.pyx`` (setup.py maps the package onto a folder of another name), and
# Cython looks for the module's own .pxd only under the package path ``aragog/scheduler_ext/``,
# so a ``scheduler_ext/_beam.pxd`` would be silently ignored. ``include`` resolves next to the
# .pyx. The kernels' signatures are the cdef functions at the top of _beam.pyx.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef enum:
    K_MAX_STAGES = 32          # per-stage bitmasks are uint32 (mirrors _types.MAX_STAGES)
    K_DENSE_KEYS = 4096        # joint keys up to this many are counted densely, not sorted
    K_DIGITS_MAX = 131072      # requests with |C(r)| up to this keep their ready stage's digits


# One workflow's configuration space, viewed through the read-only arrays of a WorkflowSpace.
ctypedef struct SpaceView:
    const int32_t* stage_models   # [n_stages * width], -1 pads
    const int64_t* radices        # [n_stages]
    const int64_t* strides        # [n_stages]
    const int32_t* depths         # [n_stages]
    int64_t size                  # product of radices
    int32_t n_stages
    int32_t width


# Per-request state kept between rounds (owned by a RequestState, keyed by the C(r) array).
ctypedef struct ReqState:
    int64_t n_configs
    int32_t n_stages
    int32_t width
    int32_t validated             # C(r) checked sorted, unique, inside the space
    uint32_t counts_valid         # bit s: counts[s*width : (s+1)*width] describe C(r)
    int64_t* counts               # [n_stages * width]: configs of C(r) per candidate of stage s
    # candidate index of each config at stage digits_stage (-1: none kept), so that narrowing
    # C(r) once the stage is placed is a byte compare instead of a digit computation
    int32_t digits_stage
    uint8_t* digits               # [n_configs]
    # joint counts of the ordered ready stages (only built when >= 2 are ready):
    # distinct mixed-radix keys sum_i d_i * W_i (first ready stage most significant), sorted,
    # and the cumulative number of configs before each key
    int32_t proj_nready
    int32_t proj_ready[K_MAX_STAGES]
    int64_t proj_weight[K_MAX_STAGES]
    int64_t proj_len
    int64_t proj_cap
    int64_t* proj_keys            # [proj_len]
    int64_t* proj_cum             # [proj_len + 1]


# A request as one round sees it.
ctypedef struct ReqView:
    const int64_t* configs
    int64_t n_configs
    ReqState* state
    int32_t space
    int32_t nready
    int32_t ready_off             # its ordered ready stages in the round's flat ready array


# Everything one round's beam search reads and writes (built by run_round, used by beam_search).
ctypedef struct RoundCtx:
    # inputs
    int32_t n_models
    int32_t curve_len
    int32_t beam
    int32_t max_width
    int64_t n_reqs
    int64_t n_steps
    const int32_t* free0          # [n_models] free capacity at the start of the round
    const int32_t* occ0           # [n_models] occupancy at the start of the round
    const int64_t* gain           # [n_models * curve_len] quantized normalized curves
    const SpaceView* spaces
    const ReqView* reqs
    const int32_t* ready          # ordered ready stages of all requests, flat
    # outputs: the placement tree (one node per placement kept in some beam state)
    int64_t n_hist
    int64_t* hist_parent
    int32_t* hist_pos
    int32_t* hist_stage
    int32_t* hist_model
    int32_t* hist_cand
    int64_t* hist_n               # |C(r)| after this placement
    int64_t best_node             # last placement of the best final state (-1: none)
    int64_t best_util
    int64_t best_flex


# The digit of one stage in a config index, (c // stride) % radix, without integer division:
# when every config index is below 2^31, by exact multiply-and-shift (Granlund-Montgomery:
# floor(x / d) = (x * m) >> (32 + l) for x < 2^32 with l = ceil(log2 d), m = 2^(32+l) // d + 1,
# and x * m < 2^64 when x < 2^31); otherwise with double reciprocals and one correction.
ctypedef struct Digit:
    int64_t stride
    int64_t radix
    uint64_t mul_stride
    uint64_t mul_radix
    int32_t shift_stride
    int32_t shift_radix
    int32_t exact32
    double inv_stride
    double inv_radix
