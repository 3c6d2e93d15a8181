# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""The scheduling round's compiled kernel: the beam search of ``aragog.scheduler_ext``.

Call it through ``aragog.scheduler_ext.schedule_round``, which validates the model arrays;
``run_round`` validates each queued request itself (it walks the queue anyway) and raises
ValueError naming the queue position. The algorithm and the ranking are documented in the
package docstring; ``reference.py`` is the same round in pure Python and the parity tests
hold both to identical results.

Phases of ``run_round``:

1. (GIL) walk the queue once: a view of each request (pointers into its arrays), its ready
   stages ordered by depth desc then index, its RequestState (cached across rounds).
2. (no GIL) bring each RequestState up to date: check C(r) once per array, count the
   candidates of a lone ready stage, or build the joint counts of several ready stages.
   Requests whose state is current cost nothing here: that is the steady state under load.
3. (no GIL) the beam search over (request, ready stage) steps in FIFO / depth order.
4. (GIL) allocate the narrowed C(r) arrays of the placed requests; (no GIL) fill them.
"""

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy, memset

import operator

import numpy as np

include "_beam_types.pxi"

cnp.import_array()

cdef double UTIL_SCALE_D = 1073741824.0      # 2^30, _types.UTIL_SCALE
cdef int64_t FLEX_SCALE = 16777216           # 2^24, _types.FLEX_SCALE


def version():
    """Kernel version: bumped when the round's results could change."""
    return 1


cdef class RequestState:
    """Per-request counts kept between rounds; valid for one C(r) array object of one space."""

    cdef ReqState st
    cdef object configs           # the C(r) array the counts describe (identity is the key)
    cdef object space             # and its workflow space
    cdef RequestState successor   # state of the narrowed C(r) the last round returned

    def __cinit__(self, object configs, object space, int64_t n_configs, int32_t n_stages,
                  int32_t width, bint validated=False):
        memset(&self.st, 0, sizeof(ReqState))
        self.configs = configs
        self.space = space
        self.st.n_configs = n_configs
        self.st.n_stages = n_stages
        self.st.width = width
        self.st.validated = validated
        self.st.digits_stage = -1
        self.st.counts = <int64_t*>malloc(max(1, n_stages * width) * sizeof(int64_t))
        if self.st.counts == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.st.counts)
        free(self.st.digits)
        free(self.st.proj_keys)
        free(self.st.proj_cum)

    @property
    def cached_stages(self):
        """Stages whose candidate counts are cached (for tests and introspection)."""
        return [s for s in range(self.st.n_stages) if (self.st.counts_valid >> s) & 1]

    @property
    def joint_ready(self):
        """The ordered ready stages whose joint counts are cached (empty: none)."""
        return [self.st.proj_ready[i] for i in range(self.st.proj_nready)]


# --------------------------------------------------------------------------------------
# small kernels


cdef inline int32_t _ceil_log2(int64_t d) noexcept nogil:
    cdef int32_t bits = 0
    while (<int64_t>1 << bits) < d:
        bits += 1
    return bits


cdef inline void _digit_init(Digit* d, int64_t stride, int64_t radix, int64_t size) noexcept nogil:
    """Prepare the digit of the stage (stride, radix) for configs of a space of ``size``."""
    cdef int32_t ls = _ceil_log2(stride), lr = _ceil_log2(radix)
    d.stride = stride
    d.radix = radix
    d.inv_stride = 1.0 / <double>stride
    d.inv_radix = 1.0 / <double>radix
    d.exact32 = size <= (<int64_t>1 << 31)
    if d.exact32:
        d.shift_stride = 32 + ls
        d.mul_stride = ((<uint64_t>1) << d.shift_stride) // <uint64_t>stride + 1
        d.shift_radix = 32 + lr
        d.mul_radix = ((<uint64_t>1) << d.shift_radix) // <uint64_t>radix + 1


cdef inline int64_t _div(int64_t x, int64_t y, double inv) noexcept nogil:
    """x // y for 0 <= x < 2^39 and y >= 1, through the reciprocal ``inv`` = 1.0 / y.

    x * inv is within x / y * 2^-52 < 2^-13 of x / y, so its truncation is off by at most
    one: a single correction step gives the exact quotient.
    """
    cdef int64_t q = <int64_t>(<double>x * inv)
    cdef int64_t r = x - q * y
    if r < 0:
        q -= 1
    elif r >= y:
        q += 1
    return q


cdef inline int64_t _quot(int64_t x, const Digit* d) noexcept nogil:
    """x // stride."""
    if d.exact32:
        return <int64_t>((<uint64_t>x * d.mul_stride) >> d.shift_stride)
    return _div(x, d.stride, d.inv_stride)


cdef inline int64_t _rem(int64_t q, const Digit* d) noexcept nogil:
    """q % radix, for q = x // stride of a config x."""
    if d.exact32:
        return q - <int64_t>((<uint64_t>q * d.mul_radix) >> d.shift_radix) * d.radix
    return q - _div(q, d.radix, d.inv_radix) * d.radix


cdef inline int64_t _digit(int64_t x, const Digit* d) noexcept nogil:
    """Candidate index (x // stride) % radix of config x at the stage d describes."""
    return _rem(_quot(x, d), d)


cdef int64_t check_configs(const int64_t* configs, int64_t n, int64_t size) noexcept nogil:
    """Index of the first config that breaks "sorted, unique, in [0, size)", or -1."""
    cdef int64_t i, prev = -1
    for i in range(n):
        if configs[i] <= prev or configs[i] >= size:
            return i
        prev = configs[i]
    return -1


cdef void count_stage(const int64_t* configs, int64_t n, int64_t stride, int64_t radix,
                      int64_t size, int64_t* out, uint8_t* digits) noexcept nogil:
    """out[d] = number of configs whose candidate at the stage (stride, radix) is d.

    Also stores each config's candidate in ``digits`` unless it is NULL. C(r) is sorted, so
    the configs of one block [q * stride, (q + 1) * stride) are consecutive and share the
    digit: one digit per run of configs, found by a compare-only scan.
    """
    cdef int64_t i, k, x, q, d, nxt
    cdef Digit dg
    _digit_init(&dg, stride, radix, size)
    memset(out, 0, radix * sizeof(int64_t))
    if radix == 1:
        out[0] = n
        if digits != NULL:
            memset(digits, 0, n)
        return
    # runs shorter than ~4 configs (sparse C(r), small stride): a digit per config is cheaper
    # than the mispredicted end-of-run branches
    if <double>n * <double>stride < 4.0 * <double>size:
        if digits != NULL:
            for i in range(n):
                d = _digit(configs[i], &dg)
                out[d] += 1
                digits[i] = <uint8_t>d
        else:
            for i in range(n):
                out[_digit(configs[i], &dg)] += 1
        return
    i = 0
    while i < n:
        x = configs[i]
        q = _quot(x, &dg)
        d = _rem(q, &dg)
        nxt = (q + 1) * stride
        k = i + 1
        while k < n and configs[k] < nxt:
            k += 1
        out[d] += k - i
        if digits != NULL:
            memset(digits + i, <int>d, k - i)
        i = k


cdef int64_t filter_digits(const int64_t* configs, int64_t n, const uint8_t* digits,
                           int64_t cand, int64_t expected, int64_t* out) noexcept nogil:
    """Copy the configs whose stored digit is cand (exactly ``expected`` of them), branch-free."""
    cdef int64_t i, j = 0
    for i in range(n):
        if j == expected:
            break
        out[j] = configs[i]
        j += digits[i] == cand
    return j


cdef int _cmp_i64(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0], y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


cdef int _reserve_joint(ReqState* st, int64_t n) noexcept nogil:
    cdef int64_t* k
    cdef int64_t* c
    if n <= st.proj_cap:
        return 0
    k = <int64_t*>realloc(st.proj_keys, n * sizeof(int64_t))
    if k == NULL:
        return -1
    st.proj_keys = k
    c = <int64_t*>realloc(st.proj_cum, (n + 1) * sizeof(int64_t))
    if c == NULL:
        return -1
    st.proj_cum = c
    st.proj_cap = n
    return 0


cdef int build_joint(ReqState* st, const SpaceView* sp, const int64_t* configs,
                     const int32_t* ready, int32_t nready) noexcept nogil:
    """Joint counts of the ordered ready stages: sorted distinct keys and cumulative counts.

    key(c) = sum_i d_i(c) * W_i with W_{k-1} = 1, W_i = W_{i+1} * radix(ready[i+1]): the first
    ready stage is the most significant digit, so the configs that agree with the choices made
    for the first j ready stages form one contiguous run of keys.
    """
    cdef int64_t n = st.n_configs, i, x, key, space_keys, d = 0
    cdef int32_t p
    cdef int64_t* dense
    cdef int64_t* keys
    cdef Digit dg[K_MAX_STAGES]
    for p in range(nready):
        _digit_init(&dg[p], sp.strides[ready[p]], sp.radices[ready[p]], sp.size)
    st.proj_nready = 0
    st.proj_weight[nready - 1] = 1
    for p in range(nready - 2, -1, -1):
        st.proj_weight[p] = st.proj_weight[p + 1] * sp.radices[ready[p + 1]]
    space_keys = st.proj_weight[0] * sp.radices[ready[0]]
    if space_keys <= K_DENSE_KEYS or space_keys <= 2 * n:
        dense = <int64_t*>malloc(space_keys * sizeof(int64_t))
        if dense == NULL:
            return -1
        memset(dense, 0, space_keys * sizeof(int64_t))
        for i in range(n):
            x = configs[i]
            key = 0
            for p in range(nready):
                key += _digit(x, &dg[p]) * st.proj_weight[p]
            dense[key] += 1
        d = 0
        for key in range(space_keys):
            if dense[key]:
                d += 1
        if _reserve_joint(st, d) != 0:
            free(dense)
            return -1
        d = 0
        st.proj_cum[0] = 0
        for key in range(space_keys):
            if dense[key]:
                st.proj_keys[d] = key
                st.proj_cum[d + 1] = st.proj_cum[d] + dense[key]
                d += 1
        free(dense)
    else:
        keys = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
        if keys == NULL:
            return -1
        for i in range(n):
            x = configs[i]
            key = 0
            for p in range(nready):
                key += _digit(x, &dg[p]) * st.proj_weight[p]
            keys[i] = key
        qsort(keys, n, sizeof(int64_t), _cmp_i64)
        d = 0
        for i in range(n):
            if i == 0 or keys[i] != keys[i - 1]:
                d += 1
        if _reserve_joint(st, d) != 0:
            free(keys)
            return -1
        d = -1
        st.proj_cum[0] = 0
        for i in range(n):
            if i == 0 or keys[i] != keys[i - 1]:
                d += 1
                st.proj_keys[d] = keys[i]
                st.proj_cum[d + 1] = st.proj_cum[d]
            st.proj_cum[d + 1] += 1
        d += 1
        free(keys)
    st.proj_len = d
    for p in range(nready):
        st.proj_ready[p] = ready[p]
    st.proj_nready = nready
    return 0


cdef inline bint _joint_current(const ReqState* st, const int32_t* ready,
                                int32_t nready) noexcept nogil:
    cdef int32_t p
    if st.proj_nready != nready:
        return False
    for p in range(nready):
        if st.proj_ready[p] != ready[p]:
            return False
    return True


cdef inline int64_t _lower_bound(const int64_t* keys, int64_t lo, int64_t hi,
                                 int64_t v) noexcept nogil:
    cdef int64_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int64_t filter_configs(const int64_t* configs, int64_t n, int64_t size,
                            const int64_t* strides, const int64_t* radices, const int64_t* cands,
                            int32_t ncons, int64_t* out) noexcept nogil:
    """Copy the configs whose candidate at each constrained stage k is cands[k]; count them."""
    cdef int64_t i, x, q, j = 0, nxt = -1, cand
    cdef int32_t k
    cdef bint ok = False
    cdef Digit dg[K_MAX_STAGES]
    for k in range(ncons):
        _digit_init(&dg[k], strides[k], radices[k], size)
    if ncons == 1:
        cand = cands[0]
        if strides[0] == 1:
            for i in range(n):
                x = configs[i]
                if _digit(x, &dg[0]) == cand:
                    out[j] = x
                    j += 1
            return j
        for i in range(n):
            x = configs[i]
            if x >= nxt:
                q = _quot(x, &dg[0])
                ok = _rem(q, &dg[0]) == cand
                nxt = (q + 1) * dg[0].stride
            if ok:
                out[j] = x
                j += 1
        return j
    for i in range(n):
        x = configs[i]
        ok = True
        for k in range(ncons):
            if _digit(x, &dg[k]) != cands[k]:
                ok = False
                break
        if ok:
            out[j] = x
            j += 1
    return j


cdef inline bint _better(int64_t ua, int64_t fa, int32_t pa, int32_t ma,
                         int64_t ub, int64_t fb, int32_t pb, int32_t mb) noexcept nogil:
    """Ranking of beam states: utilization gain desc, flexibility loss asc, parent rank, model."""
    if ua != ub:
        return ua > ub
    if fa != fb:
        return fa < fb
    if pa != pb:
        return pa < pb
    return ma < mb


# --------------------------------------------------------------------------------------
# the beam search


cdef int beam_search(RoundCtx* ctx) noexcept nogil:
    """Run the beam over all (request, ready stage) steps; fill the placement tree in ctx.

    Returns 0, or -1 when memory ran out.
    """
    cdef int32_t M = ctx.n_models, L = ctx.curve_len, B = ctx.beam
    cdef int32_t W = max(ctx.max_width, 1)
    cdef int32_t KS = K_MAX_STAGES
    cdef int64_t max_children = <int64_t>B * W
    cdef int rc = 0
    # beam states, double-buffered: [0] current, [1] next
    cdef int32_t* fr[2]
    cdef int64_t* ftot[2]
    cdef int64_t* util[2]
    cdef int64_t* flex[2]
    cdef int64_t* node[2]
    cdef int64_t* ncur[2]
    cdef int64_t* lo[2]
    cdef int64_t* hi[2]
    cdef int64_t* pkey[2]
    cdef int32_t* wild[2]
    cdef int32_t* cons[2]
    # children of one step
    cdef int64_t* ch_util = <int64_t*>malloc(max_children * sizeof(int64_t))
    cdef int64_t* ch_flex = <int64_t*>malloc(max_children * sizeof(int64_t))
    cdef int64_t* ch_n = <int64_t*>malloc(max_children * sizeof(int64_t))
    cdef int64_t* ch_lo = <int64_t*>malloc(max_children * sizeof(int64_t))
    cdef int64_t* ch_hi = <int64_t*>malloc(max_children * sizeof(int64_t))
    cdef int32_t* ch_parent = <int32_t*>malloc(max_children * sizeof(int32_t))
    cdef int32_t* ch_model = <int32_t*>malloc(max_children * sizeof(int32_t))
    cdef int32_t* ch_cand = <int32_t*>malloc(max_children * sizeof(int32_t))
    cdef int64_t* sel = <int64_t*>malloc(B * sizeof(int64_t))
    cdef int64_t* cnt_buf = <int64_t*>malloc(W * sizeof(int64_t))
    cdef int64_t* bnd = <int64_t*>malloc((W + 1) * sizeof(int64_t))
    cdef int k
    for k in range(2):
        fr[k] = <int32_t*>malloc(max(1, B * M) * sizeof(int32_t))
        ftot[k] = <int64_t*>malloc(B * sizeof(int64_t))
        util[k] = <int64_t*>malloc(B * sizeof(int64_t))
        flex[k] = <int64_t*>malloc(B * sizeof(int64_t))
        node[k] = <int64_t*>malloc(B * sizeof(int64_t))
        ncur[k] = <int64_t*>malloc(B * sizeof(int64_t))
        lo[k] = <int64_t*>malloc(B * sizeof(int64_t))
        hi[k] = <int64_t*>malloc(B * sizeof(int64_t))
        pkey[k] = <int64_t*>malloc(B * sizeof(int64_t))
        wild[k] = <int32_t*>malloc(B * sizeof(int32_t))
        cons[k] = <int32_t*>malloc(B * KS * sizeof(int32_t))

    cdef int cur = 0, nxt_buf = 1
    cdef int32_t nb = 1, b, m, c, j, s, r, nsel, p
    cdef int64_t pos, i, nch, N0, nbefore, o, du, df, qb, ftotal, key, w_j, w_p
    cdef int64_t R, D, my_lo, my_hi, my_pkey, h, ins
    cdef int32_t my_wild, placed_any, R_p
    cdef const ReqView* v
    cdef const SpaceView* sp
    cdef ReqState* st
    cdef const int32_t* models
    cdef const int64_t* cnt
    cdef const int64_t* g = ctx.gain
    cdef bint multi, stop = False

    if (ch_util == NULL or ch_flex == NULL or ch_n == NULL or ch_lo == NULL or ch_hi == NULL
            or ch_parent == NULL or ch_model == NULL or ch_cand == NULL or sel == NULL
            or cnt_buf == NULL or bnd == NULL):
        rc = -1
    for k in range(2):
        if (fr[k] == NULL or ftot[k] == NULL or util[k] == NULL or flex[k] == NULL
                or node[k] == NULL or ncur[k] == NULL or lo[k] == NULL or hi[k] == NULL
                or pkey[k] == NULL or wild[k] == NULL or cons[k] == NULL):
            rc = -1

    ctx.n_hist = 0
    ctx.best_node = -1
    ctx.best_util = 0
    ctx.best_flex = 0
    if rc == 0:
        # the root state: nothing placed
        ftotal = 0
        for m in range(M):
            fr[cur][m] = ctx.free0[m]
            if ctx.free0[m] > 0:
                ftotal += ctx.free0[m]
        ftot[cur][0] = ftotal
        util[cur][0] = 0
        flex[cur][0] = 0
        node[cur][0] = -1

        for pos in range(ctx.n_reqs):
            v = &ctx.reqs[pos]
            if v.nready == 0:
                continue
            sp = &ctx.spaces[v.space]
            st = v.state
            N0 = v.n_configs
            multi = v.nready >= 2
            for j in range(v.nready):
                # the round ends when nothing more fits: no state has any free capacity left
                stop = True
                for b in range(nb):
                    if ftot[cur][b] > 0:
                        stop = False
                        break
                if stop:
                    break
                s = ctx.ready[v.ready_off + j]
                R = sp.radices[s]
                models = sp.stage_models + <int64_t>s * sp.width
                w_j = st.proj_weight[j] if multi else 0
                nch = 0
                for b in range(nb):
                    # counts of the candidates of stage s among the configs this state keeps
                    if j == 0:
                        nbefore = N0
                        my_wild = 0
                        my_lo = 0
                        my_hi = st.proj_len if multi else 0
                        my_pkey = 0
                    else:
                        nbefore = ncur[cur][b]
                        my_wild = wild[cur][b]
                        my_lo = lo[cur][b]
                        my_hi = hi[cur][b]
                        my_pkey = pkey[cur][b]
                    if N0 == 0:
                        memset(cnt_buf, 0, R * sizeof(int64_t))
                        cnt = cnt_buf
                    elif not multi:
                        cnt = st.counts + <int64_t>s * st.width
                    elif not my_wild:
                        # the state's configs are one run of keys: split it by candidate
                        for c in range(R):
                            bnd[c] = _lower_bound(st.proj_keys, my_lo, my_hi, my_pkey + c * w_j)
                        bnd[R] = my_hi
                        for c in range(R):
                            cnt_buf[c] = st.proj_cum[bnd[c + 1]] - st.proj_cum[bnd[c]]
                        cnt = cnt_buf
                    else:
                        # an earlier ready stage was skipped in this state: scan the joint counts
                        memset(cnt_buf, 0, R * sizeof(int64_t))
                        D = st.proj_len
                        for i in range(D):
                            key = st.proj_keys[i]
                            placed_any = 1
                            for p in range(j):
                                c = cons[cur][b * KS + p]
                                if c >= 0:
                                    w_p = st.proj_weight[p]
                                    R_p = <int32_t>sp.radices[st.proj_ready[p]]
                                    if (key // w_p) % R_p != c:
                                        placed_any = 0
                                        break
                            if placed_any:
                                cnt_buf[(key // w_j) % R] += st.proj_cum[i + 1] - st.proj_cum[i]
                        cnt = cnt_buf
                    placed_any = 0
                    qb = nbefore * FLEX_SCALE // N0 if N0 > 0 else 0
                    for c in range(R):
                        if cnt[c] == 0:
                            continue
                        m = models[c]
                        if fr[cur][b * M + m] <= 0:
                            continue
                        o = <int64_t>ctx.occ0[m] + (ctx.free0[m] - fr[cur][b * M + m])
                        du = (g[<int64_t>m * L + min(o + 1, L - 1)]
                              - g[<int64_t>m * L + min(o, L - 1)])
                        df = qb - cnt[c] * FLEX_SCALE // N0
                        ch_util[nch] = util[cur][b] + du
                        ch_flex[nch] = flex[cur][b] + df
                        ch_parent[nch] = b
                        ch_model[nch] = m
                        ch_cand[nch] = c
                        ch_n[nch] = cnt[c]
                        if multi and not my_wild:
                            ch_lo[nch] = bnd[c]
                            ch_hi[nch] = bnd[c + 1]
                        else:
                            ch_lo[nch] = 0
                            ch_hi[nch] = 0
                        nch += 1
                        placed_any = 1
                    if not placed_any:
                        # look-ahead: this state leaves the stage for a later round
                        ch_util[nch] = util[cur][b]
                        ch_flex[nch] = flex[cur][b]
                        ch_parent[nch] = b
                        ch_model[nch] = -1
                        ch_cand[nch] = -1
                        ch_n[nch] = nbefore
                        ch_lo[nch] = my_lo
                        ch_hi[nch] = my_hi
                        nch += 1
                # keep the top B children (insertion into a sorted list of at most B)
                nsel = 0
                for i in range(nch):
                    if nsel == B:
                        ins = sel[B - 1]
                        if not _better(ch_util[i], ch_flex[i], ch_parent[i], ch_model[i],
                                       ch_util[ins], ch_flex[ins], ch_parent[ins], ch_model[ins]):
                            continue
                        r = B - 1
                    else:
                        r = nsel
                        nsel += 1
                    while r > 0:
                        ins = sel[r - 1]
                        if not _better(ch_util[i], ch_flex[i], ch_parent[i], ch_model[i],
                                       ch_util[ins], ch_flex[ins], ch_parent[ins], ch_model[ins]):
                            break
                        sel[r] = ins
                        r -= 1
                    sel[r] = i
                # the kept children become the next beam
                for r in range(nsel):
                    i = sel[r]
                    b = ch_parent[i]
                    m = ch_model[i]
                    memcpy(fr[nxt_buf] + <int64_t>r * M, fr[cur] + <int64_t>b * M,
                           M * sizeof(int32_t))
                    util[nxt_buf][r] = ch_util[i]
                    flex[nxt_buf][r] = ch_flex[i]
                    ncur[nxt_buf][r] = ch_n[i]
                    lo[nxt_buf][r] = ch_lo[i]
                    hi[nxt_buf][r] = ch_hi[i]
                    if multi:
                        if j > 0:
                            memcpy(cons[nxt_buf] + <int64_t>r * KS, cons[cur] + <int64_t>b * KS,
                                   j * sizeof(int32_t))
                        cons[nxt_buf][r * KS + j] = ch_cand[i]
                        if j == 0:
                            wild[nxt_buf][r] = 1 if m < 0 else 0
                            pkey[nxt_buf][r] = 0
                        else:
                            wild[nxt_buf][r] = 1 if (wild[cur][b] != 0 or m < 0) else 0
                            pkey[nxt_buf][r] = pkey[cur][b]
                        if m >= 0:
                            pkey[nxt_buf][r] += ch_cand[i] * w_j
                    if m >= 0:
                        fr[nxt_buf][<int64_t>r * M + m] -= 1
                        ftot[nxt_buf][r] = ftot[cur][b] - 1
                        h = ctx.n_hist
                        ctx.n_hist += 1
                        ctx.hist_parent[h] = node[cur][b]
                        ctx.hist_pos[h] = <int32_t>pos
                        ctx.hist_stage[h] = s
                        ctx.hist_model[h] = m
                        ctx.hist_cand[h] = ch_cand[i]
                        ctx.hist_n[h] = ch_n[i]
                        node[nxt_buf][r] = h
                    else:
                        ftot[nxt_buf][r] = ftot[cur][b]
                        node[nxt_buf][r] = node[cur][b]
                nb = nsel
                cur, nxt_buf = nxt_buf, cur
            if stop:
                break
        ctx.best_node = node[cur][0]
        ctx.best_util = util[cur][0]
        ctx.best_flex = flex[cur][0]

    free(ch_util)
    free(ch_flex)
    free(ch_n)
    free(ch_lo)
    free(ch_hi)
    free(ch_parent)
    free(ch_model)
    free(ch_cand)
    free(sel)
    free(cnt_buf)
    free(bnd)
    for k in range(2):
        free(fr[k])
        free(ftot[k])
        free(util[k])
        free(flex[k])
        free(node[k])
        free(ncur[k])
        free(lo[k])
        free(hi[k])
        free(pkey[k])
        free(wild[k])
        free(cons[k])
    return rc


# --------------------------------------------------------------------------------------
# the Python entry point


cdef class _Buffers:
    """malloc'ed scratch of one round, freed however the round ends."""
    cdef ReqView* reqs
    cdef SpaceView* spaces
    cdef int32_t* ready
    cdef int64_t* gain
    cdef RoundCtx ctx
    cdef int64_t* path

    def __dealloc__(self):
        free(self.reqs)
        free(self.spaces)
        free(self.ready)
        free(self.gain)
        free(self.ctx.hist_parent)
        free(self.ctx.hist_pos)
        free(self.ctx.hist_stage)
        free(self.ctx.hist_model)
        free(self.ctx.hist_cand)
        free(self.ctx.hist_n)
        free(self.path)


def run_round(list queue, const int32_t[::1] free_cap, const int32_t[::1] occupancy,
              const double[:, ::1] curves, int beam_width, object space_type):
    """One scheduling round. Model arrays must be validated by the caller (the Python layer).

    Returns (rows, configs, stats): rows is a list of (request position, stage, model) in the
    order decided, configs maps each placed position to its narrowed C(r) (read-only int64),
    stats is (ranking utilization, ranking flexibility loss) of the chosen state.
    """
    cdef Py_ssize_t nq = len(queue)
    cdef int32_t M = <int32_t>free_cap.shape[0]
    cdef int32_t L = <int32_t>curves.shape[1]
    cdef _Buffers buf = _Buffers()
    cdef int64_t pos, n, i, ready_cap, n_ready = 0, n_spaces = 0, spaces_cap = 8
    cdef int32_t si, nst, s, t, k, nr, max_width = 1
    cdef uint32_t seen
    cdef cnp.ndarray carr
    cdef RequestState rst
    cdef ReqView* v
    cdef SpaceView* spv
    cdef double top
    cdef int64_t bad = -1, bad_pos = -1, err_mem = 0
    cdef bint want_digits
    cdef int rc
    cdef int32_t* pr

    if nq > 2147483647:
        raise ValueError("the queue is too long for one round (more than 2^31 requests)")
    buf.reqs = <ReqView*>malloc(max(nq, 1) * sizeof(ReqView))
    buf.spaces = <SpaceView*>malloc(spaces_cap * sizeof(SpaceView))
    ready_cap = max(2 * nq, 16)
    buf.ready = <int32_t*>malloc(ready_cap * sizeof(int32_t))
    buf.gain = <int64_t*>malloc(max(1, <int64_t>M * L) * sizeof(int64_t))
    if buf.reqs == NULL or buf.spaces == NULL or buf.ready == NULL or buf.gain == NULL:
        raise MemoryError()

    # quantized throughput curves, on one scale for the whole pool:
    # g[m, o] = trunc(curve[m, o] / max over every model and occupancy * 2^30)
    top = 0.0
    for k in range(M):
        for t in range(L):
            if curves[k, t] > top:
                top = curves[k, t]
    for k in range(M):
        for t in range(L):
            buf.gain[<int64_t>k * L + t] = (
                <int64_t>((curves[k, t] / top) * UTIL_SCALE_D) if top > 0 else 0)

    # phase 1: walk the queue (GIL)
    space_index = {}
    keep = []
    keep_state = []               # per queue position: the RequestState used this round
    keep_space = []
    for pos in range(nq):
        rr = queue[pos]
        try:
            space = rr.space
            configs = rr.configs
            ready = rr.ready
        except AttributeError:
            raise ValueError(f"queue[{pos}] is not a RoundRequest (it needs .space, .configs and "
                             f".ready), got {type(rr).__name__}") from None
        key = id(space)
        sidx = space_index.get(key)
        if sidx is None:
            if not isinstance(space, space_type):
                raise ValueError(f"queue[{pos}].space must be a WorkflowSpace, "
                                 f"got {type(space).__name__}")
            top_model = int(space.stage_models.max())
            if top_model >= M:
                raise ValueError(f"queue[{pos}].space names model {top_model} but the round has "
                                 f"{M} models (free has length {M})")
            if n_spaces == spaces_cap:
                spaces_cap *= 2
                spv = <SpaceView*>realloc(buf.spaces, spaces_cap * sizeof(SpaceView))
                if spv == NULL:
                    raise MemoryError()
                buf.spaces = spv
            spv = &buf.spaces[n_spaces]
            spv.stage_models = <const int32_t*>cnp.PyArray_DATA(space.stage_models)
            spv.radices = <const int64_t*>cnp.PyArray_DATA(space.radices)
            spv.strides = <const int64_t*>cnp.PyArray_DATA(space.strides)
            spv.depths = <const int32_t*>cnp.PyArray_DATA(space.depths)
            spv.n_stages = <int32_t>cnp.PyArray_DIM(space.stage_models, 0)
            spv.width = <int32_t>cnp.PyArray_DIM(space.stage_models, 1)
            spv.size = space.size
            max_width = max(max_width, spv.width)
            keep.append(space)
            sidx = n_spaces
            space_index[key] = sidx
            n_spaces += 1
        si = sidx
        spv = &buf.spaces[si]
        nst = spv.n_stages
        if not isinstance(configs, cnp.ndarray):
            raise ValueError(f"queue[{pos}].configs must be a numpy int64 array of config indices, "
                             f"got {type(configs).__name__}")
        carr = <cnp.ndarray>configs
        if cnp.PyArray_TYPE(carr) != cnp.NPY_INT64 or cnp.PyArray_NDIM(carr) != 1:
            raise ValueError(f"queue[{pos}].configs must be a 1-D int64 array, got "
                             f"{configs.dtype} with shape {configs.shape}")
        n = cnp.PyArray_DIM(carr, 0)
        temporary = not cnp.PyArray_IS_C_CONTIGUOUS(carr)
        if temporary:
            carr = np.ascontiguousarray(carr)
        st = None
        if not temporary:
            try:
                st = rr._state
            except AttributeError:
                st = None
        if type(st) is RequestState and (<RequestState>st).configs is not configs:
            # the scheduler assigned the narrowed C(r) a round returned: its state is ready
            succ = (<RequestState>st).successor
            if succ is not None and succ.configs is configs:
                st = succ
                rr._state = st
        if (type(st) is not RequestState or (<RequestState>st).configs is not configs
                or (<RequestState>st).space is not space or (<RequestState>st).st.n_configs != n):
            st = RequestState(carr, space, n, nst, spv.width)
            if not temporary:
                try:
                    rr._state = st
                except AttributeError:
                    pass
        # hold the state (and through it C(r)) while the GIL is released
        keep_state.append(st)
        keep_space.append(space)
        rst = <RequestState>st
        v = &buf.reqs[pos]
        v.configs = <const int64_t*>cnp.PyArray_DATA(carr)
        v.n_configs = n
        v.state = &rst.st
        v.space = si
        v.ready_off = <int32_t>n_ready
        # ready stages, ordered by depth desc then index (insertion sort: at most 32)
        seen = 0
        nr = 0
        for obj in ready:
            try:
                s = operator.index(obj)  # an int; a float such as 1.7 is refused, not truncated
            except (TypeError, OverflowError):
                raise ValueError(
                    f"queue[{pos}].ready must hold stage indices, got {obj!r}") from None
            if s < 0 or s >= nst:
                raise ValueError(f"queue[{pos}].ready has stage {s}, outside 0..{nst - 1}")
            if (seen >> s) & 1:
                raise ValueError(f"queue[{pos}].ready lists stage {s} twice")
            seen |= (<uint32_t>1) << s
            if n_ready + nr >= ready_cap:
                ready_cap *= 2
                pr = <int32_t*>realloc(buf.ready, ready_cap * sizeof(int32_t))
                if pr == NULL:
                    raise MemoryError()
                buf.ready = pr
            k = <int32_t>(n_ready + nr)
            while k > n_ready and (spv.depths[buf.ready[k - 1]] < spv.depths[s] or (
                    spv.depths[buf.ready[k - 1]] == spv.depths[s] and buf.ready[k - 1] > s)):
                buf.ready[k] = buf.ready[k - 1]
                k -= 1
            buf.ready[k] = s
            nr += 1
        v.nready = nr
        n_ready += nr

    # phase 2: bring the per-request state up to date (no GIL)
    with nogil:
        for pos in range(nq):
            v = &buf.reqs[pos]
            if v.nready == 0 or v.n_configs == 0:
                continue
            spv = &buf.spaces[v.space]
            if not v.state.validated:
                bad = check_configs(v.configs, v.n_configs, spv.size)
                if bad >= 0:
                    bad_pos = pos
                    break
                v.state.validated = 1
            if v.nready == 1:
                s = buf.ready[v.ready_off]
                want_digits = v.n_configs <= K_DIGITS_MAX and v.state.digits_stage != s
                if want_digits and v.state.digits == NULL:
                    v.state.digits = <uint8_t*>malloc(v.n_configs)
                    if v.state.digits == NULL:
                        err_mem = 1
                        break
                if want_digits or not (v.state.counts_valid >> s) & 1:
                    count_stage(v.configs, v.n_configs, spv.strides[s], spv.radices[s], spv.size,
                                v.state.counts + <int64_t>s * v.state.width,
                                v.state.digits if want_digits else NULL)
                    v.state.counts_valid |= (<uint32_t>1) << s
                    if want_digits:
                        v.state.digits_stage = s
            elif not _joint_current(v.state, buf.ready + v.ready_off, v.nready):
                if build_joint(v.state, spv, v.configs, buf.ready + v.ready_off, v.nready) != 0:
                    err_mem = 1
                    break
    if bad_pos >= 0:
        size = buf.spaces[buf.reqs[bad_pos].space].size
        raise ValueError(f"queue[{bad_pos}].configs must be sorted, unique config indices in "
                         f"[0, {size}); element {bad} breaks that")
    if err_mem:
        raise MemoryError()

    # phase 3: the beam search (no GIL)
    cdef RoundCtx* ctx = &buf.ctx
    ctx.n_models = M
    ctx.curve_len = L
    ctx.beam = beam_width
    ctx.max_width = max_width
    ctx.n_reqs = nq
    ctx.n_steps = n_ready
    ctx.free0 = &free_cap[0] if M > 0 else NULL
    ctx.occ0 = &occupancy[0] if M > 0 else NULL
    ctx.gain = buf.gain
    ctx.spaces = buf.spaces
    ctx.reqs = buf.reqs
    ctx.ready = buf.ready
    cdef int64_t hcap = max(1, n_ready * beam_width)
    ctx.hist_parent = <int64_t*>malloc(hcap * sizeof(int64_t))
    ctx.hist_n = <int64_t*>malloc(hcap * sizeof(int64_t))
    ctx.hist_pos = <int32_t*>malloc(hcap * sizeof(int32_t))
    ctx.hist_stage = <int32_t*>malloc(hcap * sizeof(int32_t))
    ctx.hist_model = <int32_t*>malloc(hcap * sizeof(int32_t))
    ctx.hist_cand = <int32_t*>malloc(hcap * sizeof(int32_t))
    if (ctx.hist_parent == NULL or ctx.hist_n == NULL or ctx.hist_pos == NULL
            or ctx.hist_stage == NULL or ctx.hist_model == NULL or ctx.hist_cand == NULL):
        raise MemoryError()
    if M > 0 and n_ready > 0:
        with nogil:
            rc = beam_search(ctx)
        if rc != 0:
            raise MemoryError()
    else:
        ctx.best_node = -1
        ctx.best_util = 0
        ctx.best_flex = 0

    # the best state's placements, in the order they were decided
    cdef int64_t npath = 0, h = ctx.best_node
    while h >= 0:
        npath += 1
        h = ctx.hist_parent[h]
    buf.path = <int64_t*>malloc(max(npath, 1) * sizeof(int64_t))
    if buf.path == NULL:
        raise MemoryError()
    h = ctx.best_node
    i = npath
    while h >= 0:
        i -= 1
        buf.path[i] = h
        h = ctx.hist_parent[h]
    rows = []
    for i in range(npath):
        h = buf.path[i]
        rows.append((ctx.hist_pos[h], ctx.hist_stage[h], ctx.hist_model[h]))

    # phase 4: narrowed C(r) of each placed request (allocate with the GIL, fill without)
    out = {}
    cdef int64_t g0 = 0, g1, kcons, got
    cdef int64_t cstr[K_MAX_STAGES]
    cdef int64_t crad[K_MAX_STAGES]
    cdef int64_t ccand[K_MAX_STAGES]
    cdef cnp.ndarray arr
    cdef int64_t* dst
    while g0 < npath:
        pos = ctx.hist_pos[buf.path[g0]]
        g1 = g0
        while g1 < npath and ctx.hist_pos[buf.path[g1]] == pos:
            g1 += 1
        v = &buf.reqs[pos]
        spv = &buf.spaces[v.space]
        kcons = g1 - g0
        for i in range(kcons):
            h = buf.path[g0 + i]
            cstr[i] = spv.strides[ctx.hist_stage[h]]
            crad[i] = spv.radices[ctx.hist_stage[h]]
            ccand[i] = ctx.hist_cand[h]
        n = ctx.hist_n[buf.path[g1 - 1]]
        arr = np.empty(n, dtype=np.int64)
        dst = <int64_t*>cnp.PyArray_DATA(arr)
        with nogil:
            if kcons == 1 and v.state.digits_stage == ctx.hist_stage[buf.path[g0]]:
                got = filter_digits(v.configs, v.n_configs, v.state.digits, ccand[0], n, dst)
            else:
                got = filter_configs(v.configs, v.n_configs, spv.size, cstr, crad, ccand,
                                     <int32_t>kcons, dst)
        if got != n:
            raise RuntimeError(f"internal error: request {pos} narrowed to {got} configs, "
                               f"expected {n}")
        cnp.PyArray_CLEARFLAGS(arr, cnp.NPY_ARRAY_WRITEABLE)
        out[pos] = arr
        # the narrowed array is the request's next C(r) once the scheduler assigns it: its
        # state (already known valid) waits as the successor of the state used here, which
        # stays in place for a caller that does not assign it
        nstate = RequestState(arr, keep_space[pos], n, spv.n_stages, spv.width, True)
        (<RequestState>keep_state[pos]).successor = nstate
        g0 = g1
    return rows, out, (ctx.best_util, ctx.best_flex)
