// Testbench of snn_host: plays a host byte stream and records the replies.
//
// Plusargs: +cmd=FILE (hex, one 9-bit word per line: bits 7:0 a byte sent on rx; 0x100 waits, rx idle,
// until the core is ready again after an INIT or START), +n=WORDS, +out=FILE (one reply byte per line,
// hex). The image memories are empty: the stream LOADs them.
`timescale 1ns/1ps
module snn_host_tb;
    parameter integer CMD_DEPTH = 1 << 20;
    parameter integer W_W = 8, S_W = 16, ACC_W = 32, LANES = 16, UL = 4, PIPE_DEPTH = 4, MAX_REC = 16,
        MAX_L = 8, SYN_DEPTH = 65536, BIAS_DEPTH = 4096, NEUR_DEPTH = 1024, STATE_DEPTH = 2048,
        IN_DEPTH = 1024;
    reg clk = 0, rst = 1, rx_valid = 0;
    reg [7:0] rx_data = 0;
    wire tx_valid, ready, busy, err;
    wire [7:0] tx_data;
    reg [8:0] cmd [0:CMD_DEPTH-1];
    reg [1023:0] fname;
    integer fd, i, n;

    always #5 clk = ~clk;
    always @(posedge clk) if (tx_valid) $fwrite(fd, "%02x\n", tx_data);

    snn_host #(
        .W_W(W_W), .S_W(S_W), .ACC_W(ACC_W), .LANES(LANES), .UL(UL), .PIPE_DEPTH(PIPE_DEPTH),
        .MAX_REC(MAX_REC), .MAX_L(MAX_L), .SYN_DEPTH(SYN_DEPTH), .BIAS_DEPTH(BIAS_DEPTH),
        .NEUR_DEPTH(NEUR_DEPTH), .STATE_DEPTH(STATE_DEPTH), .IN_DEPTH(IN_DEPTH), .IDX_W(16)
    ) host (
        .clk(clk), .rst(rst), .rx_valid(rx_valid), .rx_data(rx_data), .tx_valid(tx_valid),
        .tx_data(tx_data), .ready(ready), .busy(busy), .err(err)
    );

    initial begin
        if (!$value$plusargs("cmd=%s", fname)) begin $display("snn_host_tb: +cmd= missing"); $finish; end
        $readmemh(fname, cmd);
        if (!$value$plusargs("n=%d", n)) n = 0;
        if (!$value$plusargs("out=%s", fname)) begin $display("snn_host_tb: +out= missing"); $finish; end
        fd = $fopen(fname, "w");
        repeat (3) @(negedge clk);
        rst = 0;
        for (i = 0; i < n; i = i + 1) begin
            if (cmd[i][8]) begin
                rx_valid = 0;
                repeat (3) @(negedge clk);
                while (!ready) @(negedge clk);
            end else begin
                rx_valid = 1; rx_data = cmd[i][7:0];
                @(negedge clk);
            end
        end
        rx_valid = 0;
        repeat (16) @(negedge clk);
        $fclose(fd);
        $finish;
    end
endmodule
