// Testbench of snn_core: streams input events, records output spikes and per-step cycle counts.
//
// Plusargs: the five image memories (+layers= +synapse= +bias= +neuron= +state=, read by the core),
// +stim=FILE (hex words, samples one after the other, steps within a sample: for each step the event
// count, then the indices of the nonzero inputs), +samples=B +steps=T, +out=FILE (one line per step:
// "sample step step_cycles busy_cycles n_spikes idx...", decimal).
`timescale 1ns/1ps
module snn_tb;
    parameter integer STIM_DEPTH = 1 << 20;
    // the core's parameters (the driver sets them with -G)
    parameter integer W_W = 8, S_W = 16, ACC_W = 32, LANES = 16, UL = 4, PIPE_DEPTH = 4, MAX_REC = 16,
        MAX_L = 8, SYN_DEPTH = 65536, BIAS_DEPTH = 4096, NEUR_DEPTH = 1024, STATE_DEPTH = 2048,
        IN_DEPTH = 1024;
    reg clk = 0, rst = 1, init = 0, start = 0;
    reg in_we = 0, in_cnt_we = 0;
    reg [15:0] in_addr = 0, in_idx = 0, in_cnt_data = 0, rd_addr = 0;
    wire ready, done, busy;
    wire [31:0] step_cycles;
    wire [15:0] out_cnt, out_idx, out_size;
    reg [31:0] stim [0:STIM_DEPTH-1];
    reg [1023:0] fname;
    integer fd, b, t, e, p, nb, nt, cnt, busy_cycles;

    always #5 clk = ~clk;
    always @(posedge clk) if (busy) busy_cycles = busy_cycles + 1;

    snn_core #(
        .W_W(W_W), .S_W(S_W), .ACC_W(ACC_W), .LANES(LANES), .UL(UL), .PIPE_DEPTH(PIPE_DEPTH),
        .MAX_REC(MAX_REC), .MAX_L(MAX_L), .SYN_DEPTH(SYN_DEPTH), .BIAS_DEPTH(BIAS_DEPTH),
        .NEUR_DEPTH(NEUR_DEPTH), .STATE_DEPTH(STATE_DEPTH), .IN_DEPTH(IN_DEPTH), .IDX_W(16)
    ) core (
        .clk(clk), .rst(rst), .init(init), .start(start), .ready(ready), .done(done), .busy(busy),
        .step_cycles(step_cycles), .in_we(in_we), .in_addr(in_addr), .in_idx(in_idx),
        .in_cnt_we(in_cnt_we), .in_cnt_data(in_cnt_data), .rd_addr(rd_addr), .out_cnt(out_cnt),
        .out_idx(out_idx), .out_size(out_size), .ld_we(1'b0), .ld_sel(3'd0), .ld_addr(32'd0), .ld_data(64'd0)
    );

    initial begin
        if (!$value$plusargs("stim=%s", fname)) begin $display("snn_tb: +stim= missing"); $finish; end
        $readmemh(fname, stim);
        if (!$value$plusargs("samples=%d", nb)) nb = 1;
        if (!$value$plusargs("steps=%d", nt)) nt = 1;
        if (!$value$plusargs("out=%s", fname)) begin $display("snn_tb: +out= missing"); $finish; end
        fd = $fopen(fname, "w");
        repeat (3) @(negedge clk);
        rst = 0;
        p = 0;
        for (b = 0; b < nb; b = b + 1) begin
            @(negedge clk); init = 1;
            @(negedge clk); init = 0;
            @(negedge clk);
            while (!ready) @(negedge clk);
            for (t = 0; t < nt; t = t + 1) begin
                cnt = stim[p]; p = p + 1;
                for (e = 0; e < cnt; e = e + 1) begin
                    in_we = 1; in_addr = e[15:0]; in_idx = stim[p][15:0]; p = p + 1;
                    @(negedge clk);
                end
                in_we = 0; in_cnt_we = 1; in_cnt_data = cnt[15:0];
                @(negedge clk);
                in_cnt_we = 0; busy_cycles = 0; start = 1;
                @(negedge clk);
                start = 0;
                while (!done) @(negedge clk);
                @(negedge clk);
                $fwrite(fd, "%0d %0d %0d %0d %0d", b, t, step_cycles, busy_cycles, out_cnt);
                for (e = 0; e < out_cnt; e = e + 1) begin
                    rd_addr = e[15:0];
                    @(negedge clk);
                    $fwrite(fd, " %0d", out_idx);
                end
                $fwrite(fd, "\n");
            end
        end
        $fclose(fd);
        $finish;
    end
endmodule
