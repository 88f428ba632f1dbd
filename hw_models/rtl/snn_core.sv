// snn_core: the snncompile reference neuromorphic core (image format version 1).
//
// ONE design, programmed by the weight-memory image (not generated per network). The five image
// memories (layers, synapse, bias, neuron, state) are loaded with $readmemh in simulation (file names
// from plusargs +layers= +synapse= +bias= +neuron= +state=) or written through the host load port
// (ld_*) on hardware. Sizes and widths are parameters (the Python driver derives them from the
// image manifest and the target profile).
//
// Operation (see backends/intsim/cycles.py, whose counting rules this core implements cycle for cycle):
//   * init: decodes the layer table (one 32-bit word per cycle) into a per-layer control register file,
//     then clears the live state (copied from the state image), the accumulators (preset to the
//     synapse biases) and the event lists. Not part of any time step.
//   * step (start pulse): for each neuron layer in table order, with no bubbles between phases:
//       integrate: for every event of the layer's input (an event list: no search cycles), read that
//         presynaptic row of synapse memory, LANES synapses per cycle, into the accumulators:
//         ceil(row_len / LANES) cycles per event; then the recurrent events (the layer's own spikes
//         of the previous step): dense rows likewise, one-to-one: 1 cycle per event;
//       update: UL neurons issued per cycle into a PIPE_DEPTH-stage pipeline; the last stage writes
//         the state back, presets the accumulators for the next step and appends spikes to the
//         layer's event list: ceil(N / UL) + PIPE_DEPTH cycles.
//     step_cycles counts exactly these cycles; busy is high for exactly these cycles.
//   * the numeric contract is snncompile.ir.qops.QLIF / QCubaLIF (delayed and immediate reset;
//     subtract / zero (keep_input, drop_update) / none; every rounding mode; saturation; floor).
//
// Supported image subset (the Python driver refuses the rest before simulation): Input -> QLinear ->
// QLIF/QCubaLIF chains (dense, biases, no per-channel shifts), dense or one-to-one recurrence, binary
// spikes (graded 1 on 2^0), every layer on one core. A QConv2d stored unrolled (conv_unrolled = 1:
// dense rows, targets without a conv engine) runs as a linear layer whose bias word is per output
// channel (d1*d2 outputs per word); a Flatten stands for its input. Asynchronous memory reads
// (LUT/FF memories).
`default_nettype none

module snn_core #(
    parameter integer W_W = 8,          // synapse weight bits
    parameter integer S_W = 16,         // state bits
    parameter integer ACC_W = 32,       // accumulator bits
    parameter integer LANES = 16,       // synapses per integration cycle
    parameter integer UL = 4,           // neurons issued per update cycle
    parameter integer PIPE_DEPTH = 4,   // update pipeline stages
    parameter integer MAX_REC = 16,     // layer-table records
    parameter integer MAX_L = 8,        // neuron layers
    parameter integer SYN_DEPTH = 65536,
    parameter integer BIAS_DEPTH = 4096,
    parameter integer NEUR_DEPTH = 1024, // neuron words (all layers)
    parameter integer STATE_DEPTH = 2048,
    parameter integer IN_DEPTH = 1024,   // input event list
    parameter integer IDX_W = 16,
    parameter integer DP_W = 64          // neuron-update datapath bits (the driver checks the range)
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              init,        // pulse: decode the layer table, clear state (between samples)
    input  wire              start,       // pulse: run one time step (after ready)
    output reg               ready,       // idle and initialised
    output reg               done,        // one-cycle pulse after a step
    output wire              busy,        // high during the counted cycles of a step
    output reg  [31:0]       step_cycles, // cycles of the last step
    // input events of the next step
    input  wire              in_we,
    input  wire [IDX_W-1:0]  in_addr,
    input  wire [IDX_W-1:0]  in_idx,
    input  wire              in_cnt_we,
    input  wire [IDX_W-1:0]  in_cnt_data,
    // output spikes of the last step: out_cnt events, out_idx = event rd_addr
    input  wire [IDX_W-1:0]  rd_addr,
    output wire [IDX_W-1:0]  out_cnt,
    output wire [IDX_W-1:0]  out_idx,
    output wire [IDX_W-1:0]  out_size,
    // host load port (programs the image memories on hardware; sel 0 layers 1 synapse 2 bias 3 neuron 4 state)
    input  wire              ld_we,
    input  wire [2:0]        ld_sel,
    input  wire [31:0]       ld_addr,
    input  wire [63:0]       ld_data
);
    localparam integer REC = 96;
    localparam integer LAYER_DEPTH = MAX_REC * REC;
    // layer-table field offsets (snncompile.backends.image.layout.RECORD_FIELDS; checked by the driver)
    localparam integer F_OPCODE = 0, F_ARG = 1, F_D1 = 4, F_D2 = 5, F_SYN_BASE = 12, F_BIAS_BASE = 14, F_SHIFT_BASE = 15,
        F_NEURON_BASE = 31, F_NEURONS = 32, F_STATE_BASE = 33, F_DECAY_FRAC = 34, F_ALPHA_FRAC = 35,
        F_MEM_FRAC = 36, F_MEM_LO = 37, F_MEM_HI = 38, F_MEM_ROUND = 39, F_SYN_FRAC = 40, F_SYN_LO = 41,
        F_SYN_HI = 42, F_SYN_ROUND = 43, F_IN_FRAC = 44, F_RESET = 45, F_RESET_DELAY = 46,
        F_ZERO_MODE = 47, F_REC_KIND = 50, F_REC_FRAC = 51, F_REC_BASE = 52, F_REC_COUNT = 53,
        F_REC_BIAS_BASE = 54, F_FLOOR_PRESENT = 62, F_FLOOR = 63;
    localparam [3:0] OP_INPUT = 1, OP_OUTPUT = 2, OP_LINEAR = 3, OP_CONV = 4, OP_FLATTEN = 8, OP_LIF = 9,
        OP_CUBA = 10;

    // ------------------------------------------------------------------ image memories
    reg signed [31:0]    layers_mem [0:LAYER_DEPTH-1];
    reg signed [W_W-1:0] syn_mem    [0:SYN_DEPTH-1];
    reg signed [31:0]    bias_mem   [0:BIAS_DEPTH-1];
    reg        [63:0]    neuron_mem [0:NEUR_DEPTH-1];
    reg signed [S_W-1:0] state_init [0:STATE_DEPTH-1];
    // live data
    reg signed [S_W-1:0]   state_ram [0:STATE_DEPTH-1];
    reg signed [ACC_W-1:0] acc       [0:NEUR_DEPTH-1];  // feed-forward input x[t] (+ synapse bias)
    reg signed [ACC_W-1:0] racc      [0:NEUR_DEPTH-1];  // recurrent input R(s[t-1])
    reg        [IDX_W-1:0] ev_mem    [0:NEUR_DEPTH-1];  // event list of each layer at its neuron_base
    reg        [IDX_W-1:0] in_ev     [0:IN_DEPTH-1];
    reg        [IDX_W-1:0] in_cnt;

`ifndef SYNTHESIS
    integer k0;
    reg [1023:0] fname;
    initial begin
        for (k0 = 0; k0 < LAYER_DEPTH; k0 = k0 + 1) layers_mem[k0] = 0;
        for (k0 = 0; k0 < SYN_DEPTH; k0 = k0 + 1) syn_mem[k0] = 0;
        for (k0 = 0; k0 < BIAS_DEPTH; k0 = k0 + 1) bias_mem[k0] = 0;
        for (k0 = 0; k0 < NEUR_DEPTH; k0 = k0 + 1) neuron_mem[k0] = 0;
        for (k0 = 0; k0 < STATE_DEPTH; k0 = k0 + 1) state_init[k0] = 0;
        if ($value$plusargs("layers=%s", fname)) $readmemh(fname, layers_mem);
        if ($value$plusargs("synapse=%s", fname)) $readmemh(fname, syn_mem);
        if ($value$plusargs("bias=%s", fname)) $readmemh(fname, bias_mem);
        if ($value$plusargs("neuron=%s", fname)) $readmemh(fname, neuron_mem);
        if ($value$plusargs("state=%s", fname)) $readmemh(fname, state_init);
    end
`endif

    // ------------------------------------------------------------------ per-layer control registers
    reg [3:0]        rec_op    [0:MAX_REC-1];
    reg [7:0]        rec_slot  [0:MAX_REC-1];
    reg [7:0]        lin_arg   [0:MAX_REC-1];
    reg signed [31:0] lin_syn  [0:MAX_REC-1];
    reg signed [31:0] lin_bias [0:MAX_REC-1];
    reg [IDX_W-1:0]  lin_bhw   [0:MAX_REC-1];  // outputs per bias word (1: dense; H*W: unrolled conv)

    reg              l_cuba     [0:MAX_L-1];
    reg [IDX_W-1:0]  l_n        [0:MAX_L-1];
    reg [31:0]       l_nbase    [0:MAX_L-1];
    reg [31:0]       l_sbase    [0:MAX_L-1];
    reg [31:0]       l_syn      [0:MAX_L-1];
    reg signed [31:0] l_bias    [0:MAX_L-1];
    reg [IDX_W-1:0]  l_bhw      [0:MAX_L-1];
    reg              l_src_in   [0:MAX_L-1];
    reg [7:0]        l_src      [0:MAX_L-1];
    reg [1:0]        l_rkind    [0:MAX_L-1];
    reg [31:0]       l_rbase    [0:MAX_L-1];
    reg              l_rscalar  [0:MAX_L-1];
    reg signed [31:0] l_rbias   [0:MAX_L-1];
    reg [1:0]        l_reset    [0:MAX_L-1];
    reg              l_delay    [0:MAX_L-1];
    reg              l_zdrop    [0:MAX_L-1];
    reg              l_floor_en [0:MAX_L-1];
    reg signed [31:0] l_floor   [0:MAX_L-1];
    reg signed [31:0] l_mlo [0:MAX_L-1], l_mhi [0:MAX_L-1], l_slo [0:MAX_L-1], l_shi [0:MAX_L-1];
    reg [2:0]        l_mround [0:MAX_L-1], l_sround [0:MAX_L-1];
    // shifts: membrane path (beta, x, rec, thr, out) and current path (alpha, x, rec, to-membrane, out)
    reg [5:0] l_sh_b [0:MAX_L-1], l_sh_x [0:MAX_L-1], l_sh_r [0:MAX_L-1], l_sh_t [0:MAX_L-1], l_sh_o [0:MAX_L-1];
    reg [5:0] l_sh_a [0:MAX_L-1], l_shi_x [0:MAX_L-1], l_shi_r [0:MAX_L-1], l_sh_i [0:MAX_L-1], l_shi_o [0:MAX_L-1];
    reg [IDX_W-1:0] ev_cnt [0:MAX_L-1];
    reg [7:0] n_layers, out_slot;

    // ------------------------------------------------------------------ decode registers
    reg signed [31:0] f_op, f_arg, f_d1, f_d2, f_syn, f_bias, f_nbase, f_n, f_sbase, f_df, f_af, f_mf, f_mlo, f_mhi,
        f_mround, f_sf, f_slo, f_shi, f_sround, f_inf, f_reset, f_delay, f_zero, f_rkind, f_rf, f_rbase,
        f_rcount, f_rbias, f_floor_en, f_floor;

    function automatic integer imax(input integer a, input integer b);
        imax = a > b ? a : b;
    endfunction

    // ------------------------------------------------------------------ arithmetic
    // a / 2^s rounded by `mode`, with one shifter: each mode adds its offset before an arithmetic
    // (floor) shift; half_even then moves a tie that landed on an odd quotient down
    function automatic signed [DP_W-1:0] round_shift(input signed [DP_W-1:0] a, input [5:0] s, input [2:0] mode);
        reg signed [DP_W-1:0] half, mask, add, q;
        begin
            half = {{(DP_W-1){1'b0}}, s != 0} <<< (s - 1);
            mask = ({{(DP_W-1){1'b0}}, 1'b1} <<< s) - 1;
            case (mode)
                3'd1, 3'd3: add = half;                             // half_up, half_even
                3'd2: add = half - (s != 0);                        // half_down
                3'd4: add = a < 0 ? mask : 0;                       // trunc (ceil below zero)
                default: add = 0;                                   // floor
            endcase
            q = (a + add) >>> s;
            round_shift = (mode == 3'd3 && s != 0 && (a & mask) == half && q[0]) ? q - 1 : q;
        end
    endfunction

    function automatic signed [DP_W-1:0] clamp(input signed [DP_W-1:0] v, input signed [31:0] lo, input signed [31:0] hi);
        clamp = v < lo ? lo : (v > hi ? hi : v);
    endfunction

    // ------------------------------------------------------------------ sequencer
    localparam [3:0] S_RESET = 0, S_DEC = 1, S_COMMIT = 2, S_CLEAR = 3, S_IDLE = 4, S_FF = 5, S_REC = 6,
        S_UPD = 7, S_DONE = 8;
    reg [3:0] state;
    reg [7:0] rec_i;           // decode: record
    reg [6:0] fld;             // decode: field address
    reg [6:0] dec_fld;         // decode: field of dec_word
    reg signed [31:0] dec_word;
    reg dec_v;
    reg [7:0] cur;             // current layer slot
    reg [IDX_W-1:0] ev_i;      // event pointer
    reg [IDX_W-1:0] chunk;     // lane chunk within a row
    reg [31:0] ucnt;           // update cycle
    reg [IDX_W-1:0] upd_cnt;   // spikes emitted so far in this update
    reg [31:0] clr_i;          // clear: neuron within layer
    // bias word of the next neuron to clear / to retire from the pipeline (neurons go in order: the word
    // advances every l_bhw neurons, so an unrolled conv's per-channel bias needs no divider)
    reg [IDX_W-1:0] cl_ch, cl_pos, wb_ch, wb_pos;
    reg [31:0] cycles;

    assign busy = (state == S_FF) || (state == S_REC) || (state == S_UPD);
    assign out_cnt = ev_cnt[out_slot];
    assign out_idx = ev_mem[l_nbase[out_slot] + rd_addr];
    assign out_size = l_n[out_slot];

    // current layer, decoded
    wire [IDX_W-1:0] n_cur = l_n[cur];
    wire [31:0] nb_cur = l_nbase[cur];
    wire [IDX_W-1:0] ff_cnt_cur = l_src_in[cur] ? in_cnt : ev_cnt[l_src[cur]];
    wire [IDX_W-1:0] ff_ev_cur = l_src_in[cur] ? in_ev[ev_i] : ev_mem[l_nbase[l_src[cur]] + ev_i];
    wire [IDX_W-1:0] rec_ev_cur = ev_mem[nb_cur + ev_i];
    wire [IDX_W-1:0] chunks_cur = (n_cur + LANES - 1) / LANES;
    wire last_chunk = (chunk + 1 == chunks_cur);
    wire [31:0] issue_cycles = (n_cur + UL - 1) / UL;

`ifndef SYNTHESIS
    // invariants, checked every cycle in simulation ($fatal names the broken one): the sequencer in a
    // legal state on a decoded layer, event pointers within their lists, every address a step uses
    // within its memory (a layer table that passes them would read or write another layer's words)
    wire [31:0] row_end = (state == S_FF ? l_syn[cur] + ff_ev_cur * n_cur : l_rbase[cur] + rec_ev_cur * n_cur) + n_cur;
    always @(posedge clk) if (!rst) begin
        if (state > S_DONE) $fatal(1, "snn_core: illegal sequencer state %0d", state);
        if (in_cnt > IN_DEPTH) $fatal(1, "snn_core: %0d input events, the list holds %0d", in_cnt, IN_DEPTH);
        if (state == S_FF || state == S_REC || state == S_UPD) begin
            if (cur >= n_layers) $fatal(1, "snn_core: layer %0d of %0d", cur, n_layers);
            if (nb_cur + n_cur > NEUR_DEPTH)
                $fatal(1, "snn_core: layer %0d: neurons [%0d, %0d) beyond NEUR_DEPTH %0d", cur, nb_cur, nb_cur + n_cur, NEUR_DEPTH);
            if (l_sbase[cur] + (l_cuba[cur] ? 2 : 1) * n_cur > STATE_DEPTH)
                $fatal(1, "snn_core: layer %0d: state words beyond STATE_DEPTH %0d", cur, STATE_DEPTH);
        end
        if (state == S_FF && ev_i >= ff_cnt_cur) $fatal(1, "snn_core: layer %0d: event %0d of %0d", cur, ev_i, ff_cnt_cur);
        if (state == S_REC && ev_i >= ev_cnt[cur]) $fatal(1, "snn_core: layer %0d: recurrent event %0d of %0d", cur, ev_i, ev_cnt[cur]);
        if ((state == S_FF || (state == S_REC && l_rkind[cur] == 1)) && row_end > SYN_DEPTH)
            $fatal(1, "snn_core: layer %0d: synapse address %0d beyond SYN_DEPTH %0d", cur, row_end - 1, SYN_DEPTH);
        if (state == S_UPD && ev_cnt[cur] > n_cur) $fatal(1, "snn_core: layer %0d: %0d spikes of %0d neurons", cur, ev_cnt[cur], n_cur);
    end
`endif

    // ------------------------------------------------------------------ update pipeline
    reg              p_v   [0:PIPE_DEPTH-1][0:UL-1];
    reg [IDX_W-1:0]  p_i   [0:PIPE_DEPTH-1][0:UL-1];
    reg signed [S_W-1:0] p_m [0:PIPE_DEPTH-1][0:UL-1];
    reg signed [S_W-1:0] p_s [0:PIPE_DEPTH-1][0:UL-1];
    reg              p_spk [0:PIPE_DEPTH-1][0:UL-1];

    // issue stage: the exact integer neuron step of UL neurons (combinational)
    reg              iv   [0:UL-1];
    reg [IDX_W-1:0]  ii   [0:UL-1];
    reg signed [DP_W-1:0] im  [0:UL-1];
    reg signed [DP_W-1:0] is_ [0:UL-1];
    reg              ispk [0:UL-1];
    integer l;
    reg [31:0] gi;
    reg signed [DP_W-1:0] m, sy, x, rx, thr, m0, a, ai;
    reg signed [16:0] beta, alpha;      // unsigned 16-bit decays, as signed operands
    reg signed [S_W+16:0] pm, ps;       // decay products (narrow multipliers)
    reg r, spk;
    reg [63:0] nw;
    always @* begin
        for (l = 0; l < UL; l = l + 1) begin
            gi = ucnt * UL + l;
            iv[l] = (state == S_UPD) && (ucnt < issue_cycles) && (gi < n_cur);
            ii[l] = gi[IDX_W-1:0];
            m  = state_ram[l_sbase[cur] + gi];
            sy = state_ram[l_sbase[cur] + n_cur + gi];
            x  = acc[nb_cur + gi];
            rx = racc[nb_cur + gi];
            nw = neuron_mem[nb_cur + gi];
            thr = $signed(nw[31:0]);
            beta = {1'b0, nw[47:32]};
            alpha = {1'b0, nw[63:48]};
            r = m > thr;
            if (!l_cuba[cur]) begin
                m0 = (l_reset[cur] == 2'd1 && !l_zdrop[cur] && r) ? 0 : m;
                pm = beta * $signed(m0[S_W-1:0]);
                a = (DP_W'(pm) <<< l_sh_b[cur]) + (x <<< l_sh_x[cur]);
                if (l_rkind[cur] != 0) a = a + (rx <<< l_sh_r[cur]);
                if (l_reset[cur] == 2'd0 && r) a = a - (thr <<< l_sh_t[cur]);
                else if (l_reset[cur] == 2'd1 && l_zdrop[cur] && r) a = 0;
                m = clamp(round_shift(a, l_sh_o[cur], l_mround[cur]), l_mlo[cur], l_mhi[cur]);
                if (l_floor_en[cur] && m < l_floor[cur]) m = {{32{l_floor[cur][31]}}, l_floor[cur]};
                is_[l] = 0;
            end else begin
                ps = alpha * $signed(sy[S_W-1:0]);
                ai = (DP_W'(ps) <<< l_sh_a[cur]) + (x <<< l_shi_x[cur]);
                if (l_rkind[cur] != 0) ai = ai + (rx <<< l_shi_r[cur]);
                pm = beta * $signed(m[S_W-1:0]);
                a = (DP_W'(pm) <<< l_sh_b[cur]) + (ai <<< l_sh_i[cur]);
                if (l_reset[cur] == 2'd0 && r) a = a - (thr <<< l_sh_t[cur]);
                else if (l_reset[cur] == 2'd1 && r) a = 0;
                is_[l] = clamp(round_shift(ai, l_shi_o[cur], l_sround[cur]), l_slo[cur], l_shi[cur]);
                m = clamp(round_shift(a, l_sh_o[cur], l_mround[cur]), l_mlo[cur], l_mhi[cur]);
            end
            spk = m > thr;
            if (!l_delay[cur]) begin  // immediate reset: m -= d*thr (subtract) or d*m (zero), d = s[t] - r
                if (spk && !r) m = (l_reset[cur] == 2'd0) ? m - thr : (l_reset[cur] == 2'd1 ? 0 : m);
                else if (r && !spk) m = (l_reset[cur] == 2'd0) ? m + thr : (l_reset[cur] == 2'd1 ? m + m : m);
                m = clamp(m, l_mlo[cur], l_mhi[cur]);
            end
            im[l] = m;
            ispk[l] = spk;
        end
    end

    // write-back stage (the last pipeline stage): spikes compacted into the event list
    reg [IDX_W-1:0] wb_spikes;
    always @* begin
        wb_spikes = 0;
        for (l = 0; l < UL; l = l + 1)
            if (p_v[PIPE_DEPTH-1][l] && p_spk[PIPE_DEPTH-1][l]) wb_spikes = wb_spikes + 1;
    end
    wire [IDX_W-1:0] cnt_now = upd_cnt + wb_spikes;   // spikes of this layer including this cycle's

    // phase a layer starts in: nothing is spent on layers without events (spike counts forwarded)
    function automatic [3:0] enter(input [7:0] s, input [7:0] just_done, input [IDX_W-1:0] just_cnt);
        reg [IDX_W-1:0] ffc, rc;
        begin
            ffc = l_src_in[s] ? in_cnt : (l_src[s] == just_done ? just_cnt : ev_cnt[l_src[s]]);
            rc = (s == just_done) ? just_cnt : ev_cnt[s];
            if (ffc != 0) enter = S_FF;
            else if (l_rkind[s] != 0 && rc != 0) enter = S_REC;
            else enter = S_UPD;
        end
    endfunction

    wire [7:0] NONE = 8'hff;
    integer q, j;
    reg [IDX_W-1:0] wo, bch, bpos;
    reg [31:0] row, col;
    always @(posedge clk) begin
        done <= 1'b0;
        if (ld_we) begin
            case (ld_sel)
                3'd0: layers_mem[ld_addr] <= ld_data[31:0];
                3'd1: syn_mem[ld_addr] <= ld_data[W_W-1:0];
                3'd2: bias_mem[ld_addr] <= ld_data[31:0];
                3'd3: neuron_mem[ld_addr] <= ld_data;
                default: state_init[ld_addr] <= ld_data[S_W-1:0];
            endcase
        end
        if (in_we) in_ev[in_addr] <= in_idx;
        if (in_cnt_we) in_cnt <= in_cnt_data;
        if (rst) begin
            state <= S_RESET;
            ready <= 1'b0;
            step_cycles <= 0;
            for (q = 0; q < PIPE_DEPTH; q = q + 1)
                for (j = 0; j < UL; j = j + 1) p_v[q][j] <= 1'b0;
        end else begin
            // pipeline registers
            for (j = 0; j < UL; j = j + 1) begin
                p_v[0][j] <= iv[j]; p_i[0][j] <= ii[j]; p_m[0][j] <= im[j][S_W-1:0];
                p_s[0][j] <= is_[j][S_W-1:0]; p_spk[0][j] <= ispk[j];
            end
            for (q = 1; q < PIPE_DEPTH; q = q + 1)
                for (j = 0; j < UL; j = j + 1) begin
                    p_v[q][j] <= p_v[q-1][j]; p_i[q][j] <= p_i[q-1][j]; p_m[q][j] <= p_m[q-1][j];
                    p_s[q][j] <= p_s[q-1][j]; p_spk[q][j] <= p_spk[q-1][j];
                end
            // write-back
            if (state == S_UPD) begin
                wo = upd_cnt;
                bch = wb_ch;
                bpos = wb_pos;
                for (j = 0; j < UL; j = j + 1)
                    if (p_v[PIPE_DEPTH-1][j]) begin
                        state_ram[l_sbase[cur] + p_i[PIPE_DEPTH-1][j]] <= p_m[PIPE_DEPTH-1][j];
                        if (l_cuba[cur]) state_ram[l_sbase[cur] + n_cur + p_i[PIPE_DEPTH-1][j]] <= p_s[PIPE_DEPTH-1][j];
                        acc[nb_cur + p_i[PIPE_DEPTH-1][j]] <=
                            l_bias[cur] < 0 ? {ACC_W{1'b0}} : bias_mem[l_bias[cur] + bch][ACC_W-1:0];
                        bpos = bpos + 1;
                        if (bpos == l_bhw[cur]) begin bpos = 0; bch = bch + 1; end
                        racc[nb_cur + p_i[PIPE_DEPTH-1][j]] <=
                            (l_rkind[cur] == 1 && l_rbias[cur] >= 0) ? bias_mem[l_rbias[cur] + p_i[PIPE_DEPTH-1][j]][ACC_W-1:0] : {ACC_W{1'b0}};
                        if (p_spk[PIPE_DEPTH-1][j]) begin
                            ev_mem[nb_cur + wo] <= p_i[PIPE_DEPTH-1][j];
                            wo = wo + 1;
                        end
                    end
                upd_cnt <= cnt_now;
                wb_ch <= bch;
                wb_pos <= bpos;
            end
            case (state)
                S_RESET: if (init) begin state <= S_DEC; rec_i <= 0; fld <= 0; dec_v <= 1'b0; n_layers <= 0; ready <= 1'b0; end
                S_IDLE: begin
                    if (init) begin state <= S_DEC; rec_i <= 0; fld <= 0; dec_v <= 1'b0; n_layers <= 0; ready <= 1'b0; end
                    else if (start) begin
                        cur <= 0; ev_i <= 0; chunk <= 0; ucnt <= 0; upd_cnt <= 0; cycles <= 0; ready <= 1'b0;
                        wb_ch <= 0; wb_pos <= 0;
                        state <= enter(0, NONE, 0);
                    end
                end
                S_DEC: begin  // one layer-table word per cycle (registered read: the table can sit in block RAM)
                    dec_word <= layers_mem[rec_i * REC + fld];
                    dec_fld <= fld;
                    dec_v <= 1'b1;
                    fld <= fld + 1;
                    if (dec_v) case (dec_fld)
                        F_OPCODE: f_op <= dec_word;
                        F_ARG: f_arg <= dec_word;
                        F_D1: f_d1 <= dec_word;
                        F_D2: f_d2 <= dec_word;
                        F_SYN_BASE: f_syn <= dec_word;
                        F_BIAS_BASE: f_bias <= dec_word;
                        F_NEURON_BASE: f_nbase <= dec_word;
                        F_NEURONS: f_n <= dec_word;
                        F_STATE_BASE: f_sbase <= dec_word;
                        F_DECAY_FRAC: f_df <= dec_word;
                        F_ALPHA_FRAC: f_af <= dec_word;
                        F_MEM_FRAC: f_mf <= dec_word;
                        F_MEM_LO: f_mlo <= dec_word;
                        F_MEM_HI: f_mhi <= dec_word;
                        F_MEM_ROUND: f_mround <= dec_word;
                        F_SYN_FRAC: f_sf <= dec_word;
                        F_SYN_LO: f_slo <= dec_word;
                        F_SYN_HI: f_shi <= dec_word;
                        F_SYN_ROUND: f_sround <= dec_word;
                        F_IN_FRAC: f_inf <= dec_word;
                        F_RESET: f_reset <= dec_word;
                        F_RESET_DELAY: f_delay <= dec_word;
                        F_ZERO_MODE: f_zero <= dec_word;
                        F_REC_KIND: f_rkind <= dec_word;
                        F_REC_FRAC: f_rf <= dec_word;
                        F_REC_BASE: f_rbase <= dec_word;
                        F_REC_COUNT: f_rcount <= dec_word;
                        F_REC_BIAS_BASE: f_rbias <= dec_word;
                        F_FLOOR_PRESENT: f_floor_en <= dec_word;
                        F_FLOOR: f_floor <= dec_word;
                        default: ;
                    endcase
                    if (dec_v && dec_fld == REC - 1) state <= S_COMMIT;
                end
                S_COMMIT: begin
                    fld <= 0;
                    dec_v <= 1'b0;
                    rec_op[rec_i] <= f_op[3:0];
                    case (f_op[3:0])
                        OP_LINEAR: begin
                            lin_arg[rec_i] <= f_arg[7:0]; lin_syn[rec_i] <= f_syn; lin_bias[rec_i] <= f_bias; lin_bhw[rec_i] <= 1;
                        end
                        OP_CONV: begin  // stored unrolled (dense rows; the driver refuses kernels): a linear layer
                            lin_arg[rec_i] <= f_arg[7:0]; lin_syn[rec_i] <= f_syn; lin_bias[rec_i] <= f_bias;
                            lin_bhw[rec_i] <= f_d1[IDX_W-1:0] * f_d2[IDX_W-1:0];  // bias per output channel: H*W outputs per word
                        end
                        OP_FLATTEN: begin  // renames axes only: stands for its input
                            rec_op[rec_i] <= rec_op[f_arg[7:0]]; rec_slot[rec_i] <= rec_slot[f_arg[7:0]];
                        end
                        OP_OUTPUT: out_slot <= rec_slot[f_arg[7:0]];
                        OP_LIF, OP_CUBA: begin : commit_neuron
                            integer big, bigi, rf;
                            rf = (f_rkind != 0) ? f_rf : f_inf;
                            bigi = imax(imax(f_sf + f_af, f_inf), rf);
                            big = (f_op[3:0] == OP_CUBA) ? imax(f_mf + f_df, bigi) : imax(imax(f_mf + f_df, f_inf), rf);
                            rec_slot[rec_i] <= n_layers;
                            l_cuba[n_layers] <= (f_op[3:0] == OP_CUBA);
                            l_n[n_layers] <= f_n[IDX_W-1:0];
                            l_nbase[n_layers] <= f_nbase;
                            l_sbase[n_layers] <= f_sbase;
                            l_syn[n_layers] <= lin_syn[f_arg[7:0]];
                            l_bias[n_layers] <= lin_bias[f_arg[7:0]];
                            l_bhw[n_layers] <= lin_bhw[f_arg[7:0]];
                            l_src_in[n_layers] <= rec_op[lin_arg[f_arg[7:0]]] == OP_INPUT;
                            l_src[n_layers] <= rec_slot[lin_arg[f_arg[7:0]]];
                            l_rkind[n_layers] <= f_rkind[1:0];
                            l_rbase[n_layers] <= f_rbase;
                            l_rscalar[n_layers] <= (f_rcount == 1);
                            l_rbias[n_layers] <= f_rbias;
                            l_reset[n_layers] <= f_reset[1:0];
                            l_delay[n_layers] <= f_delay[0];
                            l_zdrop[n_layers] <= f_zero[0];
                            l_floor_en[n_layers] <= f_floor_en[0];
                            l_floor[n_layers] <= f_floor;
                            l_mlo[n_layers] <= f_mlo; l_mhi[n_layers] <= f_mhi; l_mround[n_layers] <= f_mround[2:0];
                            l_slo[n_layers] <= f_slo; l_shi[n_layers] <= f_shi; l_sround[n_layers] <= f_sround[2:0];
                            l_sh_b[n_layers] <= big - f_mf - f_df;
                            l_sh_x[n_layers] <= (f_op[3:0] == OP_CUBA) ? 0 : big - f_inf;
                            l_sh_r[n_layers] <= big - rf;
                            l_sh_t[n_layers] <= big - f_mf;
                            l_sh_o[n_layers] <= big - f_mf;
                            l_sh_a[n_layers] <= bigi - f_sf - f_af;
                            l_shi_x[n_layers] <= bigi - f_inf;
                            l_shi_r[n_layers] <= bigi - rf;
                            l_sh_i[n_layers] <= big - bigi;
                            l_shi_o[n_layers] <= bigi - f_sf;
                            n_layers <= n_layers + 1;
                        end
                        default: ;
                    endcase
                    if (f_op == 0 || rec_i == MAX_REC - 1) begin
                        state <= S_CLEAR; cur <= 0; clr_i <= 0; cl_ch <= 0; cl_pos <= 0;
                    end else begin
                        state <= S_DEC; rec_i <= rec_i + 1;
                    end
                end
                S_CLEAR: begin  // one neuron per cycle: initial state, preset accumulators
                    if (cur >= n_layers) begin state <= S_IDLE; ready <= 1'b1; end
                    else begin
                        state_ram[l_sbase[cur] + clr_i] <= state_init[l_sbase[cur] + clr_i];
                        if (l_cuba[cur]) state_ram[l_sbase[cur] + n_cur + clr_i] <= state_init[l_sbase[cur] + n_cur + clr_i];
                        acc[nb_cur + clr_i] <= l_bias[cur] < 0 ? {ACC_W{1'b0}} : bias_mem[l_bias[cur] + cl_ch][ACC_W-1:0];
                        racc[nb_cur + clr_i] <=
                            (l_rkind[cur] == 1 && l_rbias[cur] >= 0) ? bias_mem[l_rbias[cur] + clr_i][ACC_W-1:0] : {ACC_W{1'b0}};
                        ev_cnt[cur] <= 0;
                        if (clr_i + 1 >= n_cur) begin clr_i <= 0; cur <= cur + 1; cl_ch <= 0; cl_pos <= 0; end
                        else begin
                            clr_i <= clr_i + 1;
                            if (cl_pos + 1 == l_bhw[cur]) begin cl_pos <= 0; cl_ch <= cl_ch + 1; end
                            else cl_pos <= cl_pos + 1;
                        end
                    end
                end
                S_FF, S_REC: begin
                    cycles <= cycles + 1;
                    if (state == S_FF || l_rkind[cur] == 1) begin
                        // a row: LANES synapses of row (event) per cycle
                        row = (state == S_FF ? l_syn[cur] + ff_ev_cur * n_cur : l_rbase[cur] + rec_ev_cur * n_cur);
                        for (j = 0; j < LANES; j = j + 1) begin
                            col = chunk * LANES + j;
                            if (col < n_cur) begin
                                if (state == S_FF) acc[nb_cur + col] <= acc[nb_cur + col] + syn_mem[row + col];
                                else racc[nb_cur + col] <= racc[nb_cur + col] + syn_mem[row + col];
                            end
                        end
                    end else begin  // one-to-one: V[j] onto neuron j
                        racc[nb_cur + rec_ev_cur] <= racc[nb_cur + rec_ev_cur]
                            + syn_mem[l_rbase[cur] + (l_rscalar[cur] ? 0 : rec_ev_cur)];
                    end
                    if (state == S_REC && l_rkind[cur] == 3 || last_chunk) begin
                        chunk <= 0;
                        if (ev_i + 1 == (state == S_FF ? ff_cnt_cur : ev_cnt[cur])) begin
                            ev_i <= 0;
                            state <= (state == S_FF && l_rkind[cur] != 0 && ev_cnt[cur] != 0) ? S_REC : S_UPD;
                        end else ev_i <= ev_i + 1;
                    end else chunk <= chunk + 1;
                end
                S_UPD: begin
                    cycles <= cycles + 1;
                    if (ucnt + 1 == issue_cycles + PIPE_DEPTH) begin
                        ev_cnt[cur] <= cnt_now;
                        ucnt <= 0;
                        upd_cnt <= 0;
                        wb_ch <= 0;
                        wb_pos <= 0;
                        if (cur + 1 == n_layers) begin
                            state <= S_DONE;
                            step_cycles <= cycles + 1;
                        end else begin
                            cur <= cur + 1;
                            state <= enter(cur + 1, cur, cnt_now);
                        end
                    end else ucnt <= ucnt + 1;
                end
                S_DONE: begin done <= 1'b1; ready <= 1'b1; state <= S_IDLE; end
                default: state <= S_RESET;
            endcase
        end
    end
endmodule
`default_nettype wire
