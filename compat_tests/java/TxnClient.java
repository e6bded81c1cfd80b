// Idempotent and transactional producers of the official Java client, for compat_tests/test_idempotent_transactional.py.
//
//   TxnClient BOOTSTRAP produce-default TOPIC N            default producer config (idempotence on, acks=all)
//   TxnClient BOOTSTRAP transactional TOPIC TXN_ID T K     T transactions of K records, odd-numbered ones aborted
//   TxnClient BOOTSTRAP fence TOPIC TXN_ID                 two producers with one transactional.id: the first is fenced
//
// The last stdout line says what happened ("acked N", "done T", "fenced"); any failure exits non-zero.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
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
            case "produce-default": produceDefault(bootstrap, argv[2], Integer.parseInt(argv[3])); break;
            case "transactional":
                transactional(bootstrap, argv[2], argv[3], Integer.parseInt(argv[4]), Integer.parseInt(argv[5]));
                break;
            case "fence": fence(bootstrap, argv[2], argv[3]); break;
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

    static void produceDefault(String bootstrap, String topic, int n) throws Exception {
        AtomicInteger acked = new AtomicInteger();
        AtomicReference<Exception> failure = new AtomicReference<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(base(bootstrap))) {
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
}
