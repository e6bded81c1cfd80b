// Drives the official Java Kafka client (kafka-clients 3.9.1) for kafkapy's compat tests.
//
//   java -cp <classes>:<jars> KClient BOOTSTRAP [--prop key=value]... COMMAND ARGS...
//
// --prop sets a client property on every client the command creates (admin, producer, consumer), after
// KClient's own settings, e.g. security.protocol=SASL_SSL, sasl.jaas.config=..., ssl.truststore.type=PEM.
// Every result is one JSON object per line on stdout (hand-written JSON, no extra jars); diagnostics go
// to stderr. On failure it prints {"error": "...", "type": "<exception class>"} and exits 1. Every client
// call is bounded (request/api timeouts, max.block.ms, poll deadlines) and a watchdog halts the JVM
// after KCLIENT_DEADLINE_MS (default 90000), so a broken broker makes it fail fast, never hang.
//
// Commands:
//   create-topic NAME PARTITIONS [--rf N] [key=value...]
//   delete-topic NAME
//   list-topics
//   describe-topic NAME
//   describe-configs TOPIC|broker:ID|broker:
//   alter-config TOPIC|broker:ID|broker: key=value... [-key (delete)...]
//       "broker:ID" is the BROKER resource of that broker, "broker:" the cluster-wide default
//       (kafka-configs --entity-default)
//   produce TOPIC N [--compression none|gzip|snappy|lz4|zstd] [--acks all|1|0] [--idempotence true|false]
//           [--key-prefix P] [--value-prefix P] [--value-size BYTES] [--headers] [--partition P]
//           [--timestamp-base MS] [--timestamp-step MS] [--linger-ms MS] [--batch-size BYTES] [--start I]
//           [--no-key-every K] [--flush-each] [--report-errors]
//       --no-key-every K sends record j without a key when j % K == 0; --flush-each flushes after every send
//       (one record per batch); --report-errors prints every record's outcome, {"i", "partition", "offset", ...}
//       or {"i", "error", "type"}, and exits 0 instead of failing at the first failed record
//   consume-assign TOPIC PARTITION FROM_OFFSET N [--timeout-ms MS] [--isolation read_committed|read_uncommitted]
//   consume-group TOPIC GROUP N [--timeout-ms MS] [--reset earliest|latest]
//   group-assign TOPIC GROUP [--report-at EPOCH_MS] [--linger-ms MS] [--strategy range|roundrobin|
//           cooperative-sticky] [--defaults] [--exit-on-assign]
//       subscribe and poll; a ConsumerRebalanceListener prints {"event": "assigned"|"revoked", ...} with
//       "since_subscribe_ms" (measured inside the JVM, so JVM start-up is not counted); at wall-clock time
//       --report-at it prints {"report": [partitions]} and keeps polling --linger-ms (default 1500) more;
//       --exit-on-assign stops at the first non-empty assignment; --defaults uses the client's default
//       consumer settings (only bootstrap, group and deserializers set)
//   list-offsets TOPIC PARTITION earliest|latest|timestamp:T|max-timestamp
//   describe-group GROUP
//   group-offsets GROUP
//   list-groups

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.TopicListing;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class KClient {
    static final int API_TIMEOUT_MS = 15000;
    static final long FUTURE_WAIT_MS = 20000;
    static PrintStream out;
    static final Map<String, String> EXTRA = new LinkedHashMap<>();   // --prop key=value

    static Properties withExtra(Properties p) {
        p.putAll(EXTRA);
        return p;
    }

    public static void main(String[] argv) {
        out = new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true, StandardCharsets.UTF_8);
        startWatchdog();
        if (argv.length < 2) {
            System.err.println("usage: KClient BOOTSTRAP COMMAND ARGS...");
            System.exit(2);
        }
        String bootstrap = argv[0];
        int first = 1;
        while (first + 1 < argv.length && argv[first].equals("--prop")) {
            String kv = argv[first + 1];
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                System.err.println("--prop needs key=value, got: " + kv);
                System.exit(2);
            }
            EXTRA.put(kv.substring(0, eq), kv.substring(eq + 1));
            first += 2;
        }
        if (first >= argv.length) {
            System.err.println("usage: KClient BOOTSTRAP [--prop key=value]... COMMAND ARGS...");
            System.exit(2);
        }
        String cmd = argv[first];
        List<String> args = new ArrayList<>();
        for (int i = first + 1; i < argv.length; i++) args.add(argv[i]);
        int rc;
        try {
            rc = run(bootstrap, cmd, args);
        } catch (Throwable t) {
            Throwable cause = t;
            while (cause instanceof ExecutionException && cause.getCause() != null) cause = cause.getCause();
            Map<String, Object> err = obj();
            err.put("error", String.valueOf(cause.getMessage()));
            err.put("type", cause.getClass().getSimpleName());
            emit(err);
            t.printStackTrace(System.err);
            rc = 1;
        }
        out.flush();
        System.err.flush();
        // Runtime.halt: do not wait for any client thread that refuses to die
        Runtime.getRuntime().halt(rc);
    }

    static void startWatchdog() {
        long deadline = 90000;
        String env = System.getenv("KCLIENT_DEADLINE_MS");
        if (env != null && !env.isEmpty()) deadline = Long.parseLong(env);
        final long ms = deadline;
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(ms);
            } catch (InterruptedException e) {
                return;
            }
            Map<String, Object> err = obj();
            err.put("error", "KClient watchdog: still running after " + ms + " ms");
            err.put("type", "Watchdog");
            emit(err);
            out.flush();
            Runtime.getRuntime().halt(3);
        }, "kclient-watchdog");
        t.setDaemon(true);
        t.start();
    }

    static int run(String bootstrap, String cmd, List<String> a) throws Exception {
        switch (cmd) {
            case "create-topic": return createTopic(bootstrap, a);
            case "delete-topic": return deleteTopic(bootstrap, a);
            case "list-topics": return listTopics(bootstrap);
            case "describe-topic": return describeTopic(bootstrap, a);
            case "describe-configs": return describeConfigs(bootstrap, a);
            case "alter-config": return alterConfig(bootstrap, a);
            case "produce": return produce(bootstrap, a);
            case "consume-assign": return consumeAssign(bootstrap, a);
            case "consume-group": return consumeGroup(bootstrap, a);
            case "group-assign": return groupAssign(bootstrap, a);
            case "list-offsets": return listOffsets(bootstrap, a);
            case "describe-group": return describeGroup(bootstrap, a);
            case "group-offsets": return groupOffsets(bootstrap, a);
            case "list-groups": return listGroups(bootstrap);
            default:
                throw new IllegalArgumentException("unknown command: " + cmd);
        }
    }

    // ---------------------------------------------------------------- admin

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "kclient-admin");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, API_TIMEOUT_MS);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, API_TIMEOUT_MS);
        p.put(AdminClientConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MS_CONFIG, 5000);
        p.put(AdminClientConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MAX_MS_CONFIG, 10000);
        p.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, 100);
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 1000);
        return Admin.create(withExtra(p));
    }

    static <T> T get(KafkaFuture<T> f) throws Exception {
        return f.get(FUTURE_WAIT_MS, TimeUnit.MILLISECONDS);
    }

    static void closeAdmin(Admin admin) {
        admin.close(Duration.ofSeconds(5));
    }

    static int createTopic(String bootstrap, List<String> a) throws Exception {
        need(a, 2, "create-topic NAME PARTITIONS [--rf N] [key=value...]");
        String name = a.get(0);
        int partitions = Integer.parseInt(a.get(1));
        short rf = 1;
        Map<String, String> configs = new LinkedHashMap<>();
        for (int i = 2; i < a.size(); i++) {
            String s = a.get(i);
            if (s.equals("--rf")) {
                rf = Short.parseShort(a.get(++i));
            } else {
                String[] kv = splitKv(s);
                configs.put(kv[0], kv[1]);
            }
        }
        Admin admin = admin(bootstrap);
        try {
            NewTopic nt = new NewTopic(name, partitions, rf).configs(configs);
            org.apache.kafka.clients.admin.CreateTopicsResult r = admin.createTopics(Collections.singleton(nt));
            get(r.all());
            Map<String, Object> o = obj();
            o.put("created", name);
            o.put("partitions", get(r.numPartitions(name)));
            o.put("replication_factor", get(r.replicationFactor(name)));
            o.put("topic_id", String.valueOf(get(r.topicId(name))));
            emit(o);
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static int deleteTopic(String bootstrap, List<String> a) throws Exception {
        need(a, 1, "delete-topic NAME");
        Admin admin = admin(bootstrap);
        try {
            get(admin.deleteTopics(Collections.singleton(a.get(0))).all());
            Map<String, Object> o = obj();
            o.put("deleted", a.get(0));
            emit(o);
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static int listTopics(String bootstrap) throws Exception {
        Admin admin = admin(bootstrap);
        try {
            Collection<TopicListing> ls = get(admin.listTopics(new ListTopicsOptions().listInternal(true)).listings());
            TreeMap<String, TopicListing> sorted = new TreeMap<>();
            for (TopicListing l : ls) sorted.put(l.name(), l);
            for (TopicListing l : sorted.values()) {
                Map<String, Object> o = obj();
                o.put("topic", l.name());
                o.put("internal", l.isInternal());
                o.put("topic_id", String.valueOf(l.topicId()));
                emit(o);
            }
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static int describeTopic(String bootstrap, List<String> a) throws Exception {
        need(a, 1, "describe-topic NAME");
        Admin admin = admin(bootstrap);
        try {
            Map<String, TopicDescription> m = get(admin.describeTopics(Collections.singleton(a.get(0))).allTopicNames());
            TopicDescription d = m.get(a.get(0));
            Map<String, Object> o = obj();
            o.put("topic", d.name());
            o.put("internal", d.isInternal());
            o.put("topic_id", String.valueOf(d.topicId()));
            List<Object> parts = new ArrayList<>();
            for (TopicPartitionInfo p : d.partitions()) {
                Map<String, Object> po = obj();
                po.put("partition", p.partition());
                po.put("leader", p.leader() == null ? null : p.leader().id());
                po.put("replicas", nodeIds(p.replicas()));
                po.put("isr", nodeIds(p.isr()));
                parts.add(po);
            }
            o.put("partitions", parts);
            emit(o);
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static List<Object> nodeIds(List<Node> nodes) {
        List<Object> ids = new ArrayList<>();
        for (Node n : nodes) ids.add(n.id());
        return ids;
    }

    static ConfigResource configResource(String spec) {
        if (spec.startsWith("broker:")) return new ConfigResource(ConfigResource.Type.BROKER, spec.substring(7));
        return new ConfigResource(ConfigResource.Type.TOPIC, spec);
    }

    static int describeConfigs(String bootstrap, List<String> a) throws Exception {
        need(a, 1, "describe-configs TOPIC|broker:ID|broker:");
        ConfigResource res = configResource(a.get(0));
        Admin admin = admin(bootstrap);
        try {
            Config c = get(admin.describeConfigs(Collections.singleton(res)).all()).get(res);
            TreeMap<String, ConfigEntry> sorted = new TreeMap<>();
            for (ConfigEntry e : c.entries()) sorted.put(e.name(), e);
            for (ConfigEntry e : sorted.values()) {
                Map<String, Object> o = obj();
                o.put("name", e.name());
                o.put("value", e.value());
                o.put("source", String.valueOf(e.source()));
                o.put("default", e.isDefault());
                o.put("read_only", e.isReadOnly());
                o.put("sensitive", e.isSensitive());
                emit(o);
            }
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static int alterConfig(String bootstrap, List<String> a) throws Exception {
        need(a, 2, "alter-config TOPIC|broker:ID|broker: key=value... [-key...]");
        ConfigResource res = configResource(a.get(0));
        List<AlterConfigOp> ops = new ArrayList<>();
        for (int i = 1; i < a.size(); i++) {
            String s = a.get(i);
            if (s.startsWith("-") && !s.contains("=")) {
                ops.add(new AlterConfigOp(new ConfigEntry(s.substring(1), null), AlterConfigOp.OpType.DELETE));
            } else {
                String[] kv = splitKv(s);
                ops.add(new AlterConfigOp(new ConfigEntry(kv[0], kv[1]), AlterConfigOp.OpType.SET));
            }
        }
        Map<ConfigResource, Collection<AlterConfigOp>> m = new HashMap<>();
        m.put(res, ops);
        Admin admin = admin(bootstrap);
        try {
            get(admin.incrementalAlterConfigs(m).all());
            Map<String, Object> o = obj();
            o.put("altered", a.get(0));
            o.put("ops", ops.size());
            emit(o);
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static int listOffsets(String bootstrap, List<String> a) throws Exception {
        need(a, 3, "list-offsets TOPIC PARTITION earliest|latest|timestamp:T|max-timestamp");
        TopicPartition tp = new TopicPartition(a.get(0), Integer.parseInt(a.get(1)));
        String spec = a.get(2);
        OffsetSpec os;
        if (spec.equals("earliest")) os = OffsetSpec.earliest();
        else if (spec.equals("latest")) os = OffsetSpec.latest();
        else if (spec.equals("max-timestamp")) os = OffsetSpec.maxTimestamp();
        else if (spec.startsWith("timestamp:")) os = OffsetSpec.forTimestamp(Long.parseLong(spec.substring(10)));
        else throw new IllegalArgumentException("bad offset spec: " + spec);
        Admin admin = admin(bootstrap);
        try {
            ListOffsetsResult.ListOffsetsResultInfo info =
                get(admin.listOffsets(Collections.singletonMap(tp, os)).partitionResult(tp));
            Map<String, Object> o = obj();
            o.put("partition", tp.partition());
            o.put("offset", info.offset());
            o.put("timestamp", info.timestamp());
            o.put("leader_epoch", info.leaderEpoch().orElse(null));
            emit(o);
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static int listGroups(String bootstrap) throws Exception {
        Admin admin = admin(bootstrap);
        try {
            Collection<ConsumerGroupListing> ls = get(admin.listConsumerGroups().all());
            TreeMap<String, ConsumerGroupListing> sorted = new TreeMap<>();
            for (ConsumerGroupListing l : ls) sorted.put(l.groupId(), l);
            for (ConsumerGroupListing l : sorted.values()) {
                Map<String, Object> o = obj();
                o.put("group", l.groupId());
                o.put("simple", l.isSimpleConsumerGroup());
                o.put("state", l.state().map(String::valueOf).orElse(null));
                emit(o);
            }
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static int describeGroup(String bootstrap, List<String> a) throws Exception {
        need(a, 1, "describe-group GROUP");
        Admin admin = admin(bootstrap);
        try {
            ConsumerGroupDescription d =
                get(admin.describeConsumerGroups(Collections.singleton(a.get(0))).all()).get(a.get(0));
            Map<String, Object> o = obj();
            o.put("group", d.groupId());
            o.put("state", String.valueOf(d.state()));
            o.put("protocol", d.partitionAssignor());
            o.put("coordinator", d.coordinator() == null ? null : d.coordinator().id());
            List<Object> members = new ArrayList<>();
            for (MemberDescription m : d.members()) {
                Map<String, Object> mo = obj();
                mo.put("member_id", m.consumerId());
                mo.put("client_id", m.clientId());
                mo.put("host", m.host());
                List<Object> tps = new ArrayList<>();
                for (TopicPartition tp : m.assignment().topicPartitions()) tps.add(tp.topic() + ":" + tp.partition());
                Collections.sort(tps, (x, y) -> ((String) x).compareTo((String) y));
                mo.put("assignment", tps);
                members.add(mo);
            }
            o.put("members", members);
            emit(o);
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    static int groupOffsets(String bootstrap, List<String> a) throws Exception {
        need(a, 1, "group-offsets GROUP");
        Admin admin = admin(bootstrap);
        try {
            Map<TopicPartition, OffsetAndMetadata> m =
                get(admin.listConsumerGroupOffsets(a.get(0)).partitionsToOffsetAndMetadata());
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : sortTp(m).entrySet()) {
                Map<String, Object> o = obj();
                o.put("topic", e.getKey().topic());
                o.put("partition", e.getKey().partition());
                o.put("offset", e.getValue() == null ? null : e.getValue().offset());
                o.put("metadata", e.getValue() == null ? null : e.getValue().metadata());
                emit(o);
            }
        } finally {
            closeAdmin(admin);
        }
        return 0;
    }

    // ---------------------------------------------------------------- producer

    static int produce(String bootstrap, List<String> a) throws Exception {
        need(a, 2, "produce TOPIC N [options]");
        String topic = a.get(0);
        int n = Integer.parseInt(a.get(1));
        String compression = "none", acks = "all", idempotence = "false";
        String keyPrefix = null, valuePrefix = "value";
        int valueSize = 0, start = 0;
        boolean headers = false;
        Integer partition = null;
        Long tsBase = null;
        long tsStep = 0;
        String linger = "5", batchSize = null;
        int noKeyEvery = 0;
        boolean flushEach = false, reportErrors = false;
        for (int i = 2; i < a.size(); i++) {
            String s = a.get(i);
            switch (s) {
                case "--compression": compression = a.get(++i); break;
                case "--acks": acks = a.get(++i); break;
                case "--idempotence": idempotence = a.get(++i); break;
                case "--key-prefix": keyPrefix = a.get(++i); break;
                case "--value-prefix": valuePrefix = a.get(++i); break;
                case "--value-size": valueSize = Integer.parseInt(a.get(++i)); break;
                case "--headers": headers = true; break;
                case "--partition": partition = Integer.parseInt(a.get(++i)); break;
                case "--timestamp-base": tsBase = Long.parseLong(a.get(++i)); break;
                case "--timestamp-step": tsStep = Long.parseLong(a.get(++i)); break;
                case "--linger-ms": linger = a.get(++i); break;
                case "--batch-size": batchSize = a.get(++i); break;
                case "--start": start = Integer.parseInt(a.get(++i)); break;
                case "--no-key-every": noKeyEvery = Integer.parseInt(a.get(++i)); break;
                case "--flush-each": flushEach = true; break;
                case "--report-errors": reportErrors = true; break;
                default: throw new IllegalArgumentException("unknown produce option: " + s);
            }
        }
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "kclient-producer");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
        p.put(ProducerConfig.ACKS_CONFIG, acks);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, idempotence);
        p.put(ProducerConfig.LINGER_MS_CONFIG, linger);
        if (batchSize != null) p.put(ProducerConfig.BATCH_SIZE_CONFIG, batchSize);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, API_TIMEOUT_MS);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, API_TIMEOUT_MS);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30000);
        p.put(ProducerConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MS_CONFIG, 5000);
        p.put(ProducerConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MAX_MS_CONFIG, 10000);
        p.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, 100);
        p.put(ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 1000);
        final RecordMetadata[] results = new RecordMetadata[n];
        final Exception[] errors = new Exception[n];
        final AtomicReference<Exception> failure = new AtomicReference<>();
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(withExtra(p));
        try {
            for (int j = 0; j < n; j++) {
                int i = start + j;
                byte[] key = keyPrefix == null || (noKeyEvery > 0 && j % noKeyEvery == 0) ? null
                    : (keyPrefix + "-" + i).getBytes(StandardCharsets.UTF_8);
                byte[] value = value(valuePrefix, i, valueSize).getBytes(StandardCharsets.UTF_8);
                RecordHeaders hs = new RecordHeaders();
                if (headers) {
                    hs.add("idx", String.valueOf(i).getBytes(StandardCharsets.UTF_8));
                    hs.add("codec", compression.getBytes(StandardCharsets.UTF_8));
                    hs.add("empty", new byte[0]);
                }
                Long ts = tsBase == null ? null : tsBase + tsStep * j;
                ProducerRecord<byte[], byte[]> rec = new ProducerRecord<>(topic, partition, ts, key, value, hs);
                final int slot = j;
                producer.send(rec, (md, ex) -> {
                    if (ex != null) {
                        errors[slot] = ex;
                        failure.compareAndSet(null, ex);
                    } else {
                        results[slot] = md;
                    }
                });
                if (flushEach) producer.flush();
            }
            producer.flush();
        } finally {
            producer.close(Duration.ofSeconds(5));
        }
        if (failure.get() != null && !reportErrors) throw failure.get();
        for (int j = 0; j < n; j++) {
            if (errors[j] != null) {
                Map<String, Object> o = obj();
                o.put("i", start + j);
                o.put("error", String.valueOf(errors[j].getMessage()));
                o.put("type", errors[j].getClass().getSimpleName());
                emit(o);
                continue;
            }
            RecordMetadata md = results[j];
            if (md == null) throw new IllegalStateException("no acknowledgement for record " + (start + j));
            Map<String, Object> o = obj();
            o.put("i", start + j);
            o.put("partition", md.partition());
            o.put("offset", md.hasOffset() ? md.offset() : null);
            o.put("timestamp", md.hasTimestamp() ? md.timestamp() : null);
            emit(o);
        }
        return 0;
    }

    static String value(String prefix, int i, int size) {
        StringBuilder sb = new StringBuilder(prefix).append('-').append(i);
        if (sb.length() < size) {
            sb.append(' ');
            while (sb.length() < size) sb.append((char) ('a' + (sb.length() % 26)));
        }
        return sb.toString();
    }

    // ---------------------------------------------------------------- consumer

    static Properties consumerProps(String bootstrap, String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "kclient-consumer");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, API_TIMEOUT_MS);
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, API_TIMEOUT_MS);
        p.put(ConsumerConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MS_CONFIG, 5000);
        p.put(ConsumerConfig.SOCKET_CONNECTION_SETUP_TIMEOUT_MAX_MS_CONFIG, 10000);
        p.put(ConsumerConfig.RETRY_BACKOFF_MS_CONFIG, 100);
        p.put(ConsumerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 1000);
        p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 200);
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10000);
            p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000);
        } else {
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        }
        return p;
    }

    static Map<String, Object> recordJson(ConsumerRecord<byte[], byte[]> r) {
        Map<String, Object> o = obj();
        o.put("topic", r.topic());
        o.put("partition", r.partition());
        o.put("offset", r.offset());
        o.put("timestamp", r.timestamp());
        o.put("timestamp_type", String.valueOf(r.timestampType()));
        o.put("key", r.key() == null ? null : new String(r.key(), StandardCharsets.UTF_8));
        o.put("value", r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8));
        List<Object> hs = new ArrayList<>();
        for (Header h : r.headers()) {
            List<Object> pair = new ArrayList<>();
            pair.add(h.key());
            pair.add(h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8));
            hs.add(pair);
        }
        o.put("headers", hs);
        o.put("leader_epoch", r.leaderEpoch().orElse(null));
        return o;
    }

    static int consumeAssign(String bootstrap, List<String> a) throws Exception {
        need(a, 4, "consume-assign TOPIC PARTITION FROM_OFFSET N [--timeout-ms MS] [--isolation LEVEL]");
        TopicPartition tp = new TopicPartition(a.get(0), Integer.parseInt(a.get(1)));
        long from = Long.parseLong(a.get(2));
        int n = Integer.parseInt(a.get(3));
        long timeoutMs = 20000;
        String isolation = "read_uncommitted";
        for (int i = 4; i < a.size(); i++) {
            String s = a.get(i);
            if (s.equals("--timeout-ms")) timeoutMs = Long.parseLong(a.get(++i));
            else if (s.equals("--isolation")) isolation = a.get(++i);
            else throw new IllegalArgumentException("unknown consume-assign option: " + s);
        }
        Properties p = consumerProps(bootstrap, null);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(withExtra(p));
        int got = 0;
        try {
            c.assign(Collections.singleton(tp));
            c.seek(tp, from);
            long deadline = System.currentTimeMillis() + timeoutMs;
            while (got < n) {
                long left = deadline - System.currentTimeMillis();
                if (left <= 0) break;
                ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(Math.min(left, 500)));
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    if (got >= n) break;
                    emit(recordJson(r));
                    got++;
                }
            }
        } finally {
            c.close(Duration.ofSeconds(5));
        }
        if (got < n) System.err.println("consume-assign: timed out with " + got + "/" + n + " records");
        return 0;
    }

    static int consumeGroup(String bootstrap, List<String> a) throws Exception {
        need(a, 3, "consume-group TOPIC GROUP N [--timeout-ms MS] [--reset earliest|latest]");
        String topic = a.get(0), group = a.get(1);
        int n = Integer.parseInt(a.get(2));
        long timeoutMs = 30000;
        String reset = "earliest";
        for (int i = 3; i < a.size(); i++) {
            String s = a.get(i);
            if (s.equals("--timeout-ms")) timeoutMs = Long.parseLong(a.get(++i));
            else if (s.equals("--reset")) reset = a.get(++i);
            else throw new IllegalArgumentException("unknown consume-group option: " + s);
        }
        Properties p = consumerProps(bootstrap, group);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, reset);
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(withExtra(p));
        int got = 0;
        try {
            c.subscribe(Collections.singleton(topic));
            long deadline = System.currentTimeMillis() + timeoutMs;
            Map<TopicPartition, OffsetAndMetadata> toCommit = new HashMap<>();
            while (got < n) {
                long left = deadline - System.currentTimeMillis();
                if (left <= 0) break;
                ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(Math.min(left, 500)));
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    if (got >= n) break;
                    emit(recordJson(r));
                    toCommit.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    got++;
                }
            }
            if (got < n) System.err.println("consume-group: timed out with " + got + "/" + n + " records");
            if (!toCommit.isEmpty()) c.commitSync(toCommit, Duration.ofMillis(API_TIMEOUT_MS));
            Map<TopicPartition, OffsetAndMetadata> committed =
                c.committed(new java.util.HashSet<>(c.assignment()), Duration.ofMillis(API_TIMEOUT_MS));
            List<Object> cl = new ArrayList<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : sortTp(committed).entrySet()) {
                Map<String, Object> co = obj();
                co.put("partition", e.getKey().partition());
                co.put("offset", e.getValue() == null ? null : e.getValue().offset());
                cl.add(co);
            }
            List<Object> assigned = new ArrayList<>();
            for (Integer part : new TreeSet<>(partitionsOf(c.assignment()))) assigned.add(part);
            Map<String, Object> o = obj();
            o.put("committed", cl);
            o.put("assignment", assigned);
            o.put("generation", c.groupMetadata().generationId());
            o.put("member_id", c.groupMetadata().memberId());
            emit(o);
        } finally {
            c.close(Duration.ofSeconds(5));
        }
        return 0;
    }

    static int groupAssign(String bootstrap, List<String> a) throws Exception {
        need(a, 2, "group-assign TOPIC GROUP [--report-at EPOCH_MS] [--linger-ms MS] [--strategy S] [--defaults] "
                   + "[--exit-on-assign]");
        String topic = a.get(0), group = a.get(1);
        long reportAt = -1, lingerMs = 1500;
        String strategy = null;
        boolean defaults = false, exitOnAssign = false;
        for (int i = 2; i < a.size(); i++) {
            String s = a.get(i);
            switch (s) {
                case "--report-at": reportAt = Long.parseLong(a.get(++i)); break;
                case "--linger-ms": lingerMs = Long.parseLong(a.get(++i)); break;
                case "--strategy": strategy = a.get(++i); break;
                case "--defaults": defaults = true; break;
                case "--exit-on-assign": exitOnAssign = true; break;
                default: throw new IllegalArgumentException("unknown group-assign option: " + s);
            }
        }
        Properties p;
        if (defaults) {
            p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        } else {
            p = consumerProps(bootstrap, group);
        }
        if (strategy != null) {
            String cls;
            switch (strategy) {
                case "range": cls = "org.apache.kafka.clients.consumer.RangeAssignor"; break;
                case "roundrobin": cls = "org.apache.kafka.clients.consumer.RoundRobinAssignor"; break;
                case "cooperative-sticky": cls = "org.apache.kafka.clients.consumer.CooperativeStickyAssignor"; break;
                default: throw new IllegalArgumentException("unknown strategy: " + strategy);
            }
            p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, cls);
        }
        KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(withExtra(p));
        final long[] t0 = new long[1];
        final boolean[] assignedOnce = new boolean[1];
        org.apache.kafka.clients.consumer.ConsumerRebalanceListener listener =
            new org.apache.kafka.clients.consumer.ConsumerRebalanceListener() {
                void event(String kind, Collection<TopicPartition> tps) {
                    Map<String, Object> o = obj();
                    o.put("event", kind);
                    List<Object> ps = new ArrayList<>();
                    for (Integer part : new TreeSet<>(partitionsOf(tps))) ps.add(part);
                    o.put("partitions", ps);
                    o.put("since_subscribe_ms", (System.nanoTime() - t0[0]) / 1e6);
                    o.put("t", System.currentTimeMillis());
                    emit(o);
                }

                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> tps) {
                    event("revoked", tps);
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> tps) {
                    event("assigned", tps);
                    if (!tps.isEmpty()) assignedOnce[0] = true;
                }
            };
        try {
            t0[0] = System.nanoTime();
            c.subscribe(Collections.singleton(topic), listener);
            long deadline = System.currentTimeMillis() + 60000;
            boolean reported = false;
            long stopAt = Long.MAX_VALUE;
            while (System.currentTimeMillis() < Math.min(deadline, stopAt)) {
                c.poll(Duration.ofMillis(50));
                if (exitOnAssign && assignedOnce[0]) break;
                if (!reported && reportAt > 0 && System.currentTimeMillis() >= reportAt) {
                    List<Object> ps = new ArrayList<>();
                    for (Integer part : new TreeSet<>(partitionsOf(c.assignment()))) ps.add(part);
                    Map<String, Object> o = obj();
                    o.put("report", ps);
                    o.put("generation", c.groupMetadata().generationId());
                    emit(o);
                    reported = true;
                    stopAt = System.currentTimeMillis() + lingerMs;
                }
            }
        } finally {
            c.close(Duration.ofSeconds(5));
        }
        return 0;
    }

    static List<Integer> partitionsOf(Collection<TopicPartition> tps) {
        List<Integer> l = new ArrayList<>();
        for (TopicPartition tp : tps) l.add(tp.partition());
        return l;
    }

    static <V> Map<TopicPartition, V> sortTp(Map<TopicPartition, V> m) {
        TreeMap<String, TopicPartition> keys = new TreeMap<>();
        for (TopicPartition tp : m.keySet()) keys.put(String.format("%s\u0000%010d", tp.topic(), tp.partition()), tp);
        Map<TopicPartition, V> out = new LinkedHashMap<>();
        for (TopicPartition tp : keys.values()) out.put(tp, m.get(tp));
        return out;
    }

    // ---------------------------------------------------------------- helpers

    static void need(List<String> a, int n, String usage) {
        if (a.size() < n) throw new IllegalArgumentException("usage: " + usage);
    }

    static String[] splitKv(String s) {
        int eq = s.indexOf('=');
        if (eq <= 0) throw new IllegalArgumentException("expected key=value, got: " + s);
        return new String[] {s.substring(0, eq), s.substring(eq + 1)};
    }

    static Map<String, Object> obj() {
        return new LinkedHashMap<>();
    }

    static synchronized void emit(Map<String, Object> o) {
        StringBuilder sb = new StringBuilder();
        json(sb, o);
        out.println(sb);
    }

    @SuppressWarnings("unchecked")
    static void json(StringBuilder sb, Object v) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof String) {
            str(sb, (String) v);
        } else if (v instanceof Boolean || v instanceof Integer || v instanceof Long || v instanceof Short) {
            sb.append(v);
        } else if (v instanceof Number) {
            double d = ((Number) v).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) sb.append("null");
            else sb.append(v);
        } else if (v instanceof Map) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<Object, Object> e : ((Map<Object, Object>) v).entrySet()) {
                if (!first) sb.append(", ");
                first = false;
                str(sb, String.valueOf(e.getKey()));
                sb.append(": ");
                json(sb, e.getValue());
            }
            sb.append('}');
        } else if (v instanceof Collection) {
            sb.append('[');
            boolean first = true;
            for (Object x : (Collection<Object>) v) {
                if (!first) sb.append(", ");
                first = false;
                json(sb, x);
            }
            sb.append(']');
        } else {
            str(sb, String.valueOf(v));
        }
    }

    static void str(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            switch (ch) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (ch < 0x20 || (ch >= 0xD800 && ch <= 0xDFFF)) sb.append(String.format("\\u%04x", (int) ch));
                    else sb.append(ch);
            }
        }
        sb.append('"');
    }
}
