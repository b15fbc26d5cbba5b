// A Java service for the leak benchmark's real traces (OpenJDK 17, G1).
//
// Every 100 ms it builds part of a batch (3 MiB, kept until the batch is done,
// BATCH_MIN..BATCH_MAX MiB, default 40-80) and some short-lived garbage; run
// with a heap that gives memory back (-XX:MaxHeapFreeRatio=10
// -XX:G1PeriodicGCInterval=5000), its RSS saw-tooths as the batches come and
// go. No leak, unless started with
//     java JavaHeap LEAK_AFTER_SECONDS LEAK_KIB_PER_SECOND [BATCH_MIN BATCH_MAX]
// then from then on it also keeps 64 KiB chunks in a static list forever
// (a session map nobody expires). Compressed time: reaches its limit in minutes.
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

public class JavaHeap {
    static final List<byte[]> LEAK = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        double leakAfter = args.length > 0 ? Double.parseDouble(args[0]) : Double.MAX_VALUE;
        double leakKiBPerS = args.length > 1 ? Double.parseDouble(args[1]) : 0;
        int batchMin = args.length > 3 ? Integer.parseInt(args[2]) * 4 : 160;
        int batchMax = args.length > 3 ? Integer.parseInt(args[3]) * 4 : 320;
        Random r = new Random(1);
        List<byte[]> batch = new ArrayList<>();
        List<byte[]> garbage = new ArrayList<>();
        int cap = batchMin + r.nextInt(batchMax - batchMin);
        long t0 = System.nanoTime();
        double carry = 0;
        for (long tick = 1; ; tick++) {
            for (int k = 0; k < 12; k++) batch.add(filled(256 * 1024, r));
            for (int k = 0; k < 8; k++) garbage.add(new byte[64 * 1024]);
            if (garbage.size() > 64) garbage.clear();
            if (batch.size() >= cap) {
                batch.clear();
                cap = batchMin + r.nextInt(batchMax - batchMin);
            }
            double now = (System.nanoTime() - t0) / 1e9;
            if (now >= leakAfter) {
                carry += leakKiBPerS / 10;
                while (carry >= 64) {
                    LEAK.add(filled(64 * 1024, r));
                    carry -= 64;
                }
            }
            long sleep = (long) ((t0 + tick * 100_000_000L - System.nanoTime()) / 1_000_000);
            if (sleep > 0) Thread.sleep(sleep);
        }
    }

    static byte[] filled(int n, Random r) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i += 4096) b[i] = (byte) r.nextInt();
        return b;
    }
}
