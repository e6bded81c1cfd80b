// Idempotent and transactional producers of the official Java client, for compat_tests/test_idempotent_transactional.py.
//
//   TxnClient BOOTSTRAP produce-default TOPIC N            default producer config (idempotence on, acks=all)
//   TxnClient BOOTSTRAP produce-plain TOPIC N              the same with enable.idempotence=false (benchmarks)
//   TxnClient BOOTSTRAP transactional TOPIC TXN_ID T K     T transactions of K records, odd-numbered ones aborted
//   TxnClient BOOTSTRAP fence TOPIC TXN_ID                 two producers with one transactional.id: the first is fenced
//   TxnClient BOOTSTRAP ctp IN OUT GROUP TXN_ID TOTAL [HALT_AFTER]
//                                                          consume-transform-produce with sendOffsetsToTransaction until
//                                                          TOTAL input records are done; with HALT_AFTER, the process
//                                                          halts (as if killed) inside transaction number HALT_AFTER + 1
//   TxnClient BOOTSTRAP describe TOPIC TXN_ID             Admin listTransactions/describeTransactions/describeProducers
//   TxnClient BOOTSTRAP bench TOPIC MODE N [SIZE]          throughput, timed inside the JVM: MODE idempotent (default
//                                                          config), plain (enable.idempotence=false) or txn100 (100-record
//                                                          transactions); a 2,000-record warm-up is not timed;
//                                                          prints "bench MODE N MS"
//
// The last stdout line says what happened ("acked N", "done T", "fenced"); any failure exits non-zero.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class TxnClient {
    public static void main(String[] argv) throws Exception {
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(80_000);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("TxnClient: deadline passed");
            System.exit(3);
        });
        watchdog.setDaemon(true);
        watchdog.start();
        String bootstrap = argv[0];
        String cmd = argv[1];
        switch (cmd) {
            case "produce-default": produceDefault(bootstrap, argv[2], Integer.parseInt(argv[3]), true); break;
            case "produce-plain": produceDefault(bootstrap, argv[2], Integer.parseInt(argv[3]), false); break;
            case "transactional":
                transactional(bootstrap, argv[2], argv[3], Integer.parseInt(argv[4]), Integer.parseInt(argv[5]));
                break;
            case "fence": fence(bootstrap, argv[2], argv[3]); break;
            case "ctp":
                consumeTransformProduce(bootstrap, argv[2], argv[3], argv[4], argv[5], Integer.parseInt(argv[6]),
                                        argv.length > 7 ? Integer.parseInt(argv[7]) : -1);
                break;
            case "describe": describe(bootstrap, argv[2], argv[3]); break;
            case "bench":
                bench(bootstrap, argv[2], argv[3], Integer.parseInt(argv[4]),
                      argv.length > 5 ? Integer.parseInt(argv[5]) : 100);
                break;
            default: throw new IllegalArgumentException("unknown command " + cmd);
        }
        System.exit(0);
    }

    static Properties base(String bootstrap) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return p;
    }

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static void produceDefault(String bootstrap, String topic, int n, boolean idempotent) throws Exception {
        AtomicInteger acked = new AtomicInteger();
        AtomicReference<Exception> failure = new AtomicReference<>();
        Properties p = base(bootstrap);
        if (!idempotent) p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, b("k" + (i % 13)), b("j" + i)), (md, ex) -> {
                    if (ex != null) failure.compareAndSet(null, ex);
                    else acked.incrementAndGet();
                });
            }
            producer.flush();
        }
        if (failure.get() != null) throw failure.get();
        System.out.println("acked " + acked.get());
    }

    static KafkaProducer<byte[], byte[]> transactionalProducer(String bootstrap, String txnId) {
        Properties p = base(bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30000);
        return new KafkaProducer<>(p);
    }

    static void transactional(String bootstrap, String topic, String txnId, int txns, int perTxn) {
        try (KafkaProducer<byte[], byte[]> producer = transactionalProducer(bootstrap, txnId)) {
            producer.initTransactions();
            for (int t = 0; t < txns; t++) {
                producer.beginTransaction();
                for (int i = 0; i < perTxn; i++) {
                    producer.send(new ProducerRecord<>(topic, b("k" + i), b("t" + t + "-" + i)));
                }
                if (t % 2 == 0) {
                    producer.commitTransaction();
                } else {
                    producer.flush();
                    producer.abortTransaction();
                }
            }
        }
        System.out.println("done " + txns);
    }

    static void fence(String bootstrap, String topic, String txnId) throws Exception {
        KafkaProducer<byte[], byte[]> first = transactionalProducer(bootstrap, txnId);
        first.initTransactions();
        first.beginTransaction();
        first.send(new ProducerRecord<>(topic, b("zombie"))).get();
        try (KafkaProducer<byte[], byte[]> second = transactionalProducer(bootstrap, txnId)) {
            second.initTransactions();
            second.beginTransaction();
            second.send(new ProducerRecord<>(topic, b("winner"))).get();
            second.commitTransaction();
        }
        boolean fenced = false;
        try {
            first.send(new ProducerRecord<>(topic, b("zombie-2"))).get();
            first.commitTransaction();
        } catch (ProducerFencedException e) {
            fenced = true;
        } catch (KafkaException e) {
            Throwable c = e;
            while (c != null) {
                if (c instanceof ProducerFencedException
                        || c instanceof org.apache.kafka.common.errors.InvalidProducerEpochException) {
                    fenced = true;
                }
                c = c.getCause();
            }
            if (!fenced) throw e;
        } catch (java.util.concurrent.ExecutionException e) {
            Throwable c = e.getCause();
            if (c instanceof ProducerFencedException
                    || c instanceof org.apache.kafka.common.errors.InvalidProducerEpochException) {
                fenced = true;
            } else {
                throw e;
            }
        } finally {
            first.close(Duration.ofSeconds(5));
        }
        System.out.println(fenced ? "fenced" : "not fenced");
    }

    static void consumeTransformProduce(String bootstrap, String in, String out, String group, String txnId,
                                        int total, int haltAfter) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "500");
        // the halted run's member stays in the group until its session expires: keep that short
        c.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        c.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        int txns = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c);
             KafkaProducer<byte[], byte[]> producer = transactionalProducer(bootstrap, txnId)) {
            producer.initTransactions();
            consumer.subscribe(Collections.singletonList(in));
            long idleSince = System.currentTimeMillis();
            while (true) {
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    Map<TopicPartition, OffsetAndMetadata> done = consumer.committed(consumer.assignment());
                    long sum = 0;
                    for (OffsetAndMetadata o : done.values()) if (o != null) sum += o.offset();
                    if (sum >= total && !consumer.assignment().isEmpty()) break;
                    if (System.currentTimeMillis() - idleSince > 60000) throw new IllegalStateException("stuck at " + sum);
                    continue;
                }
                idleSince = System.currentTimeMillis();
                producer.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    producer.send(new ProducerRecord<>(out, r.key(),
                            b("out-" + new String(r.value(), StandardCharsets.UTF_8))));
                    next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
                if (haltAfter >= 0 && txns == haltAfter) {
                    producer.flush();
                    System.out.println("halting inside transaction " + (txns + 1));
                    System.out.flush();
                    Runtime.getRuntime().halt(7);
                }
                producer.commitTransaction();
                txns++;
            }
        }
        System.out.println("done " + txns);
    }

    static void bench(String bootstrap, String topic, String mode, int n, int size) throws Exception {
        Properties p = base(bootstrap);
        boolean txn = mode.equals("txn100");
        if (mode.equals("plain")) p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
        else if (txn) p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "bench-" + System.nanoTime());
        else if (!mode.equals("idempotent")) throw new IllegalArgumentException("unknown bench mode " + mode);
        byte[] value = new byte[size];
        java.util.Arrays.fill(value, (byte) 'x');
        AtomicReference<Exception> failure = new AtomicReference<>();
        AtomicInteger acked = new AtomicInteger();
        org.apache.kafka.clients.producer.Callback cb = (md, ex) -> {
            if (ex != null) failure.compareAndSet(null, ex);
            else acked.incrementAndGet();
        };
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            if (txn) producer.initTransactions();
            int warm = 2000;
            long t0 = 0;
            for (int round = 0; round < 2; round++) {
                int count = round == 0 ? warm : n;
                if (round == 1) t0 = System.nanoTime();
                for (int i = 0; i < count; i += 100) {
                    if (txn) producer.beginTransaction();
                    for (int j = i; j < Math.min(count, i + 100); j++) {
                        producer.send(new ProducerRecord<>(topic, b("k" + (j % 97)), value), cb);
                    }
                    if (txn) producer.commitTransaction();
                }
                producer.flush();
            }
            long ms = (System.nanoTime() - t0) / 1_000_000;
            if (failure.get() != null) throw failure.get();
            if (acked.get() != warm + n) throw new IllegalStateException("acked " + acked.get() + " of " + (warm + n));
            System.out.println("bench " + mode + " " + n + " " + ms);
        }
    }

    static void describe(String bootstrap, String topic, String txnId) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            for (TransactionListing l : admin.listTransactions().all().get()) {
                if (l.transactionalId().equals(txnId)) {
                    System.out.println("listed " + l.transactionalId() + " " + l.producerId() + " " + l.state());
                }
            }
            TransactionDescription d = admin.describeTransactions(Collections.singletonList(txnId))
                    .description(txnId).get();
            System.out.println("described " + d.state() + " " + d.producerId() + " " + d.producerEpoch() + " "
                    + d.topicPartitions().size());
            TopicPartition tp = new TopicPartition(topic, 0);
            List<ProducerState> ps = admin.describeProducers(Collections.singletonList(tp)).partitionResult(tp)
                    .get().activeProducers();
            for (ProducerState s : ps) {
                System.out.println("producer " + s.producerId() + " " + s.producerEpoch() + " " + s.lastSequence()
                        + " " + s.currentTransactionStartOffset().orElse(-1L));
            }
        }
        System.out.println("described");
    }
}
