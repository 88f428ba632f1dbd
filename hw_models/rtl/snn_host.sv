// snn_host: a byte-stream host interface around snn_core (the top of the synthesized design).
//
// The host sends commands on rx (one byte per cycle where rx_valid is high): an opcode byte, then its
// payload, multi-byte fields little-endian. Replies leave on tx, one byte per cycle where tx_valid is
// high, in order. A STATUS, RESULT or SPIKE that completes while more than one byte of the previous
// reply is still to leave (or a SPIKE's read is pending) is refused (flag bit 4): after a RESULT send
// 5 bytes (NOPs) before the next reply command completes; SPIKE after SPIKE needs no padding.
// LOAD the image before INIT (INIT decodes the layer table); the INIT of each sample resets its state.
//
//   0x00 NOP                            ignored (padding while a reply leaves)
//   0x01 LOAD   sel(1) addr(4) data(8)  image word: sel 0 layers, 1 synapse, 2 bias, 3 neuron, 4 state
//   0x02 EVENT  addr(2) idx(2)          input event `addr` of the next step is input `idx`
//   0x03 COUNT  n(2)                    the next step has n input events
//   0x04 INIT                           decode the layer table, clear the state (before each sample)
//   0x05 START                          run one time step
//   0x06 STATUS                         reply: 1 byte, the flags (below)
//   0x07 RESULT                         reply: out_cnt(2) step_cycles(4) of the last step
//   0x08 SPIKE  i(2)                    reply: the index (2) of output event i (i < out_cnt)
//   0x09 CLEAR                          clear the error flags
//
// Flags (sticky until CLEAR; `err` is their OR): bit 0 bad opcode, bit 1 address out of range (a LOAD
// beyond the memory's depth or sel > 4, a SPIKE index beyond out_cnt), bit 2 event overflow (an EVENT
// address or a COUNT beyond the input event list's IN_DEPTH entries), bit 3 not ready (LOAD, EVENT,
// COUNT, INIT or START while an INIT or a step runs, START before INIT), bit 4 reply overrun; bit 6
// busy, bit 7 ready. A refused command
// changes nothing but the flags; a SPIKE beyond out_cnt replies 0xffff.
`default_nettype none

module snn_host #(
    parameter integer W_W = 8,
    parameter integer S_W = 16,
    parameter integer ACC_W = 32,
    parameter integer LANES = 16,
    parameter integer UL = 4,
    parameter integer PIPE_DEPTH = 4,
    parameter integer MAX_REC = 16,
    parameter integer MAX_L = 8,
    parameter integer SYN_DEPTH = 65536,
    parameter integer BIAS_DEPTH = 4096,
    parameter integer NEUR_DEPTH = 1024,
    parameter integer STATE_DEPTH = 2048,
    parameter integer IN_DEPTH = 1024,
    parameter integer IDX_W = 16,
    parameter integer DP_W = 64
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       rx_valid,
    input  wire [7:0] rx_data,
    output reg        tx_valid,
    output reg  [7:0] tx_data,
    output wire       ready,
    output wire       busy,
    output wire       err
);
    localparam [7:0] C_NOP = 8'h00, C_LOAD = 8'h01, C_EVENT = 8'h02, C_COUNT = 8'h03, C_INIT = 8'h04, C_START = 8'h05,
        C_STATUS = 8'h06, C_RESULT = 8'h07, C_SPIKE = 8'h08, C_CLEAR = 8'h09;
    localparam integer LAYER_DEPTH = MAX_REC * 96;

    reg [7:0] op;
    reg [3:0] need;          // payload bytes still to come (0: waiting for an opcode)
    reg [103:0] pay;         // payload, first byte in the low bits once complete
    reg [4:0] flags;
    reg [47:0] tx_buf;
    reg [2:0] tx_n;
    reg running;             // an INIT or a step is in progress
    reg spike_pend;          // a SPIKE reply waits one cycle for the event list read

    reg ld_we, in_we, in_cnt_we, c_init, c_start;
    reg [2:0] ld_sel;
    reg [31:0] ld_addr;
    reg [63:0] ld_data;
    reg [IDX_W-1:0] in_addr, in_idx, in_cnt_data, rd_addr;
    wire done;
    wire [31:0] step_cycles;
    wire [IDX_W-1:0] out_cnt, out_idx, out_size;

    snn_core #(
        .W_W(W_W), .S_W(S_W), .ACC_W(ACC_W), .LANES(LANES), .UL(UL), .PIPE_DEPTH(PIPE_DEPTH),
        .MAX_REC(MAX_REC), .MAX_L(MAX_L), .SYN_DEPTH(SYN_DEPTH), .BIAS_DEPTH(BIAS_DEPTH),
        .NEUR_DEPTH(NEUR_DEPTH), .STATE_DEPTH(STATE_DEPTH), .IN_DEPTH(IN_DEPTH), .IDX_W(IDX_W), .DP_W(DP_W)
    ) core (
        .clk(clk), .rst(rst), .init(c_init), .start(c_start), .ready(ready), .done(done), .busy(busy),
        .step_cycles(step_cycles), .in_we(in_we), .in_addr(in_addr), .in_idx(in_idx),
        .in_cnt_we(in_cnt_we), .in_cnt_data(in_cnt_data), .rd_addr(rd_addr), .out_cnt(out_cnt),
        .out_idx(out_idx), .out_size(out_size), .ld_we(ld_we), .ld_sel(ld_sel), .ld_addr(ld_addr),
        .ld_data(ld_data)
    );

    assign err = |flags;

    function automatic [3:0] payload_bytes(input [7:0] o);
        case (o)
            C_LOAD: payload_bytes = 13;
            C_EVENT: payload_bytes = 4;
            C_COUNT, C_SPIKE: payload_bytes = 2;
            default: payload_bytes = 0;
        endcase
    endfunction

    function automatic [32:0] depth_of(input [7:0] sel);
        case (sel)
            8'd0: depth_of = LAYER_DEPTH;
            8'd1: depth_of = SYN_DEPTH;
            8'd2: depth_of = BIAS_DEPTH;
            8'd3: depth_of = NEUR_DEPTH;
            8'd4: depth_of = STATE_DEPTH;
            default: depth_of = 0;
        endcase
    endfunction

    // the whole payload when this cycle's byte is its last (bytes shift in from the top: the first
    // byte of a P-byte payload then sits at bit 8 (13 - P); shifted down to bit 0)
    wire [103:0] pay_next = {rx_data, pay[103:8]} >> (8 * (13 - payload_bytes(op)));
    wire [IDX_W-1:0] spike_i = pay_next[IDX_W-1:0];

    always @(posedge clk) begin
        ld_we <= 1'b0; in_we <= 1'b0; in_cnt_we <= 1'b0; c_init <= 1'b0; c_start <= 1'b0;
        tx_valid <= 1'b0;
        if (tx_n != 0) begin
            tx_valid <= 1'b1;
            tx_data <= tx_buf[7:0];
            tx_buf <= tx_buf >> 8;
            tx_n <= tx_n - 1;
        end
        spike_pend <= 1'b0;
        if (spike_pend) begin tx_buf <= {32'd0, {(16 - IDX_W){1'b0}}, out_idx}; tx_n <= 2; end
        // the core's ready drops the cycle after an INIT/START pulse and rises when it is done
        if (running && ready && !c_init && !c_start) running <= 1'b0;
        if (rst) begin
            need <= 0; flags <= 0; tx_n <= 0; running <= 1'b0; spike_pend <= 1'b0;
        end else if (rx_valid) begin
            if (need == 0) begin
                op <= rx_data;
                pay <= 0;
                need <= payload_bytes(rx_data);
            end else begin
                pay <= {rx_data, pay[103:8]};
                need <= need - 1;
            end
            if ((need == 0 && payload_bytes(rx_data) == 0) || need == 1) begin : execute
                reg [7:0] o;
                o = (need == 0) ? rx_data : op;
                case (o)
                    C_NOP: ;
                    C_STATUS, C_RESULT, C_SPIKE:
                        if (tx_n > 1 || spike_pend) flags[4] <= 1'b1;
                        else if (o == C_STATUS) begin tx_buf <= {40'd0, ready, busy, 1'b0, flags}; tx_n <= 1; end
                        else if (o == C_RESULT) begin
                            tx_buf <= {step_cycles, {(16 - IDX_W){1'b0}}, out_cnt}; tx_n <= 6;
                        end else if (spike_i >= out_cnt) begin
                            flags[1] <= 1'b1; tx_buf <= 48'hffff; tx_n <= 2;
                        end else begin rd_addr <= spike_i; spike_pend <= 1'b1; end
                    C_LOAD:
                        if (running) flags[3] <= 1'b1;
                        else if ({1'b0, pay_next[39:8]} >= depth_of(pay_next[7:0])) flags[1] <= 1'b1;
                        else begin
                            ld_we <= 1'b1; ld_sel <= pay_next[2:0]; ld_addr <= pay_next[39:8];
                            ld_data <= pay_next[103:40];
                        end
                    C_EVENT:
                        if (running) flags[3] <= 1'b1;
                        else if (pay_next[15:0] >= IN_DEPTH) flags[2] <= 1'b1;
                        else begin
                            in_we <= 1'b1; in_addr <= pay_next[IDX_W-1:0]; in_idx <= pay_next[16+:IDX_W];
                        end
                    C_COUNT:
                        if (running) flags[3] <= 1'b1;
                        else if (pay_next[15:0] > IN_DEPTH) flags[2] <= 1'b1;
                        else begin in_cnt_we <= 1'b1; in_cnt_data <= pay_next[IDX_W-1:0]; end
                    C_INIT:
                        if (running) flags[3] <= 1'b1;
                        else begin c_init <= 1'b1; running <= 1'b1; end
                    C_START:
                        if (running || !ready) flags[3] <= 1'b1;
                        else begin c_start <= 1'b1; running <= 1'b1; end
                    C_CLEAR: flags <= 0;
                    default: flags[0] <= 1'b1;
                endcase
            end
        end
    end
endmodule
`default_nettype wire
