import com.example.InstanceDetails;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.x.discovery.ServiceCache;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;
import org.apache.curator.x.discovery.details.ServiceCacheListener;

/**
 * CuratorPeer is a live Apache Curator client driven by regkit's Go tests over
 * stdin/stdout (see internal/testenv/curator.go).
 *
 * <p>Usage: {@code java CuratorPeer <connectString> <sessionTimeoutMs> <discoveryBasePath>}
 *
 * <p>Protocol, one line each way: the peer prints {@code ready} once its session is
 * established, then reads one command per line (space-separated tokens) and answers
 * each with exactly one line, {@code ok <json>} or {@code err <exception class>: <message>}.
 * Asynchronous happenings (listener callbacks) are lines {@code event <json>}, which
 * may come at any time between answers. End of input or {@code quit} closes everything
 * and exits 0.
 *
 * <p>Commands (add new ones to {@link #commands}; recipes go beside discovery):
 * <ul>
 * <li>{@code ping}: ok "pong".
 * <li>{@code register <Payload> <service> <id> <host> <port> [key=value ...]}: registers
 *     through a {@code ServiceDiscovery<payload class>}; Void and Object register a null
 *     payload, Custom an InstanceDetails (key description), Spring a ZookeeperInstance
 *     (id = name = service, the key=values as metadata).
 * <li>{@code unregister <id>}: unregisters an instance registered by this peer.
 * <li>{@code list <Payload> <service>}: {@code queryForInstances} through a
 *     {@code ServiceDiscovery<payload class>}; ok [instance...].
 * <li>{@code cache <Payload> <service>}: starts a ServiceCache whose listener emits
 *     {"event":"cacheChanged","payload":P,"service":S}.
 * <li>{@code cached <Payload> <service>}: ok {"changes":n,"instances":[instance...]}, the
 *     cache's current content and how many times its listener was called.
 * <li>{@code mutex-acquire <name> <path> <timeoutMs>}: {@code acquire(timeout)} of the
 *     InterProcessMutex called name on path (created at first use), on the command
 *     thread (InterProcessMutex is re-entrant per thread); ok true if acquired.
 * <li>{@code mutex-release <name>}: releases it; ok true.
 * <li>{@code contend <name> <path> <rounds> <counterPath>}: starts a thread that, for
 *     rounds rounds, acquires an InterProcessMutex on path, creates counterPath/inside
 *     (an exclusive marker: NodeExists counts a violation), adds one to the decimal
 *     counter in counterPath's data, deletes the marker and releases; ok "started".
 * <li>{@code contend-wait <name> <timeoutMs>}: waits for that thread; ok
 *     {"done":bool,"rounds":n,"violations":n,"error":message or null}.
 * <li>{@code latch-start <name> <path> <id>}: starts a LeaderLatch with participant id.
 * <li>{@code latch-await <name> <timeoutMs>}: {@code await(timeout)}; ok true if leader.
 * <li>{@code latch-has <name>}: ok {@code hasLeadership()}.
 * <li>{@code latch-leader <name>}: ok the id of {@code getLeader()} ("" for none).
 * <li>{@code latch-close <name>}: closes it; ok true.
 * </ul>
 * Payload is Void, Object, Custom (com.example.InstanceDetails) or Spring
 * (org.springframework.cloud.zookeeper.discovery.ZookeeperInstance, on the classpath
 * only when the peer is started as a Spring process; otherwise a plain Curator
 * process to which the class is unknown, as in most Java fleets). An instance is
 * {"id","name","address","port","sslPort","enabled","payloadClass","payload"}.
 * Connection state changes are emitted as {"event":"connectionState","state":S}.
 */
public final class CuratorPeer {
    /** A command: the tokens after its name in, the answer's JSON value out. */
    interface Command {
        Object run(String[] args) throws Exception;
    }

    /**
     * The payload classes a command can name. Spring's is loaded by name, only when
     * used: it is on the classpath only of a peer started as a Spring process.
     */
    enum Payload {
        Void("java.lang.Void"), Object("java.lang.Object"), Custom("com.example.InstanceDetails"),
        Spring("org.springframework.cloud.zookeeper.discovery.ZookeeperInstance");

        final String className;

        Payload(String className) {
            this.className = className;
        }

        Class<?> type() throws ClassNotFoundException {
            return Class.forName(className);
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private final CuratorFramework client;
    private final String basePath;
    private final Map<String, Command> commands = new HashMap<>();
    private final Map<Payload, ServiceDiscovery<Object>> discoveries = new HashMap<>();
    private final Map<String, ServiceCache<Object>> caches = new HashMap<>();
    private final Map<String, AtomicInteger> cacheChanges = new HashMap<>();
    private final Map<String, Object[]> registered = new HashMap<>(); // id -> {Payload, ServiceInstance}
    private final Map<String, InterProcessMutex> mutexes = new HashMap<>();
    private final Map<String, LeaderLatch> latches = new HashMap<>();
    private final Map<String, Contender> contenders = new HashMap<>();

    private CuratorPeer(CuratorFramework client, String basePath) {
        this.client = client;
        this.basePath = basePath;
        commands.put("ping", a -> "pong");
        commands.put("register", this::register);
        commands.put("unregister", this::unregister);
        commands.put("list", this::list);
        commands.put("cache", this::cache);
        commands.put("cached", this::cached);
        commands.put("mutex-acquire", this::mutexAcquire);
        commands.put("mutex-release", this::mutexRelease);
        commands.put("contend", this::contend);
        commands.put("contend-wait", this::contendWait);
        commands.put("latch-start", this::latchStart);
        commands.put("latch-await", this::latchAwait);
        commands.put("latch-has", a -> latch(a).hasLeadership());
        commands.put("latch-leader", a -> latch(a).getLeader().getId());
        commands.put("latch-close", this::latchClose);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: CuratorPeer <connectString> <sessionTimeoutMs> <discoveryBasePath>");
            System.exit(2);
        }
        CuratorFramework client = CuratorFrameworkFactory.builder()
                .connectString(args[0])
                .sessionTimeoutMs(Integer.parseInt(args[1]))
                .connectionTimeoutMs(Integer.parseInt(args[1]))
                .retryPolicy(new ExponentialBackoffRetry(100, 29, 1000))
                .build();
        client.getConnectionStateListenable().addListener((c, s) -> event(mapOf("event", "connectionState", "state", s.name())));
        client.start();
        if (!client.blockUntilConnected(30, TimeUnit.SECONDS)) {
            System.err.println("CuratorPeer: no connection to " + args[0]);
            System.exit(3);
        }
        CuratorPeer peer = new CuratorPeer(client, args[2]);
        out("ready");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            line = line.trim();
            if (line.isEmpty()) {
                continue;
            }
            if (line.equals("quit")) {
                break;
            }
            out(peer.handle(line));
        }
        peer.close();
        out("ok \"bye\"");
        System.exit(0);
    }

    private String handle(String line) {
        String[] tok = line.split("\\s+");
        Command c = commands.get(tok[0]);
        try {
            if (c == null) {
                throw new IllegalArgumentException("unknown command " + tok[0]);
            }
            String[] args = new String[tok.length - 1];
            System.arraycopy(tok, 1, args, 0, args.length);
            return "ok " + JSON.writeValueAsString(c.run(args));
        } catch (Throwable e) {
            String msg = String.valueOf(e.getMessage()).replaceAll("\\s+", " ");
            return "err " + e.getClass().getName() + ": " + msg;
        }
    }

    private ServiceDiscovery<Object> discovery(Payload p) throws Exception {
        ServiceDiscovery<Object> d = discoveries.get(p);
        if (d == null) {
            @SuppressWarnings("unchecked")
            ServiceDiscoveryBuilder<Object> b = (ServiceDiscoveryBuilder<Object>) (ServiceDiscoveryBuilder<?>) ServiceDiscoveryBuilder.builder(p.type());
            d = b.client(client).basePath(basePath).build();
            d.start();
            discoveries.put(p, d);
        }
        return d;
    }

    private static void need(String[] args, int n, String usage) {
        if (args.length < n) {
            throw new IllegalArgumentException("usage: " + usage);
        }
    }

    private Object register(String[] a) throws Exception {
        need(a, 5, "register <Payload> <service> <id> <host> <port> [key=value ...]");
        Payload p = Payload.valueOf(a[0]);
        Map<String, String> kv = new TreeMap<>();
        for (int i = 5; i < a.length; i++) {
            int eq = a[i].indexOf('=');
            kv.put(a[i].substring(0, eq), a[i].substring(eq + 1));
        }
        Object payload = null;
        if (p == Payload.Custom) {
            payload = new InstanceDetails(kv.get("description"));
        } else if (p == Payload.Spring) {
            payload = JSON.convertValue(mapOf("id", a[1], "name", a[1], "metadata", kv), p.type());
        }
        ServiceInstance<Object> inst = ServiceInstance.builder()
                .name(a[1]).id(a[2]).address(a[3]).port(Integer.parseInt(a[4])).payload(payload).build();
        discovery(p).registerService(inst);
        registered.put(a[2], new Object[] {p, inst});
        return a[2];
    }

    @SuppressWarnings("unchecked")
    private Object unregister(String[] a) throws Exception {
        need(a, 1, "unregister <id>");
        Object[] r = registered.remove(a[0]);
        if (r == null) {
            throw new IllegalArgumentException("not registered by this peer: " + a[0]);
        }
        discovery((Payload) r[0]).unregisterService((ServiceInstance<Object>) r[1]);
        return a[0];
    }

    private Object list(String[] a) throws Exception {
        need(a, 2, "list <Payload> <service>");
        return describe(discovery(Payload.valueOf(a[0])).queryForInstances(a[1]));
    }

    private Object cache(String[] a) throws Exception {
        need(a, 2, "cache <Payload> <service>");
        Payload p = Payload.valueOf(a[0]);
        String key = p + " " + a[1];
        if (caches.containsKey(key)) {
            throw new IllegalStateException("cache already started: " + key);
        }
        AtomicInteger changes = new AtomicInteger();
        ServiceCache<Object> cache = discovery(p).serviceCacheBuilder().name(a[1]).build();
        cache.addListener(new ServiceCacheListener() {
            @Override
            public void cacheChanged() {
                changes.incrementAndGet();
                event(mapOf("event", "cacheChanged", "payload", p.name(), "service", a[1]));
            }

            @Override
            public void stateChanged(CuratorFramework c, ConnectionState s) {
            }
        });
        cache.start();
        caches.put(key, cache);
        cacheChanges.put(key, changes);
        return "started";
    }

    private Object cached(String[] a) throws Exception {
        need(a, 2, "cached <Payload> <service>");
        String key = Payload.valueOf(a[0]) + " " + a[1];
        ServiceCache<Object> cache = caches.get(key);
        if (cache == null) {
            throw new IllegalStateException("no cache started: " + key);
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("changes", cacheChanges.get(key).get());
        m.put("instances", describe(cache.getInstances()));
        return m;
    }

    private Object mutexAcquire(String[] a) throws Exception {
        need(a, 3, "mutex-acquire <name> <path> <timeoutMs>");
        InterProcessMutex m = mutexes.get(a[0]);
        if (m == null) {
            m = new InterProcessMutex(client, a[1]);
            mutexes.put(a[0], m);
        }
        return m.acquire(Long.parseLong(a[2]), TimeUnit.MILLISECONDS);
    }

    private Object mutexRelease(String[] a) throws Exception {
        need(a, 1, "mutex-release <name>");
        InterProcessMutex m = mutexes.get(a[0]);
        if (m == null) {
            throw new IllegalArgumentException("no mutex " + a[0]);
        }
        m.release();
        return true;
    }

    /** A thread contending for an InterProcessMutex for a number of rounds. */
    private final class Contender extends Thread {
        final InterProcessMutex mutex;
        final String counter;
        final int rounds;
        volatile int done;
        volatile int violations;
        volatile String error;

        Contender(String path, String counter, int rounds) {
            this.mutex = new InterProcessMutex(client, path);
            this.counter = counter;
            this.rounds = rounds;
            setDaemon(true);
        }

        @Override
        public void run() {
            try {
                for (int r = 0; r < rounds; r++) {
                    if (!mutex.acquire(60, TimeUnit.SECONDS)) {
                        throw new IllegalStateException("not acquired within 60s in round " + r);
                    }
                    try {
                        try {
                            client.create().creatingParentsIfNeeded().forPath(counter + "/inside");
                        } catch (org.apache.zookeeper.KeeperException.NodeExistsException e) {
                            violations++;
                        }
                        byte[] b = client.getData().forPath(counter);
                        long n = b == null || b.length == 0 ? 0 : Long.parseLong(new String(b, StandardCharsets.UTF_8));
                        client.setData().forPath(counter, Long.toString(n + 1).getBytes(StandardCharsets.UTF_8));
                        client.delete().forPath(counter + "/inside");
                    } finally {
                        mutex.release();
                    }
                    done = r + 1;
                }
            } catch (Throwable e) {
                error = e.getClass().getName() + ": " + e.getMessage();
            }
        }
    }

    private Object contend(String[] a) throws Exception {
        need(a, 4, "contend <name> <path> <rounds> <counterPath>");
        if (contenders.containsKey(a[0])) {
            throw new IllegalStateException("contender already started: " + a[0]);
        }
        Contender c = new Contender(a[1], a[3], Integer.parseInt(a[2]));
        contenders.put(a[0], c);
        c.start();
        return "started";
    }

    private Object contendWait(String[] a) throws Exception {
        need(a, 2, "contend-wait <name> <timeoutMs>");
        Contender c = contenders.get(a[0]);
        if (c == null) {
            throw new IllegalArgumentException("no contender " + a[0]);
        }
        c.join(Long.parseLong(a[1]));
        return mapOf("done", !c.isAlive(), "rounds", c.done, "violations", c.violations, "error", c.error);
    }

    private LeaderLatch latch(String[] a) {
        need(a, 1, "latch-... <name>");
        LeaderLatch l = latches.get(a[0]);
        if (l == null) {
            throw new IllegalArgumentException("no latch " + a[0]);
        }
        return l;
    }

    private Object latchStart(String[] a) throws Exception {
        need(a, 3, "latch-start <name> <path> <id>");
        if (latches.containsKey(a[0])) {
            throw new IllegalStateException("latch already started: " + a[0]);
        }
        LeaderLatch l = new LeaderLatch(client, a[1], a[2]);
        l.start();
        latches.put(a[0], l);
        return true;
    }

    private Object latchAwait(String[] a) throws Exception {
        need(a, 2, "latch-await <name> <timeoutMs>");
        return latch(a).await(Long.parseLong(a[1]), TimeUnit.MILLISECONDS);
    }

    private Object latchClose(String[] a) throws Exception {
        LeaderLatch l = latch(a);
        l.close();
        latches.remove(a[0]);
        return true;
    }

    private static List<Map<String, Object>> describe(Collection<ServiceInstance<Object>> list) {
        List<Map<String, Object>> out = new ArrayList<>();
        for (ServiceInstance<Object> i : list) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("id", i.getId());
            m.put("name", i.getName());
            m.put("address", i.getAddress());
            m.put("port", i.getPort());
            m.put("sslPort", i.getSslPort());
            m.put("enabled", i.isEnabled());
            Object p = i.getPayload();
            m.put("payloadClass", p == null ? null : p.getClass().getName());
            m.put("payload", p == null ? null : JSON.valueToTree(p));
            out.add(m);
        }
        out.sort((x, y) -> String.valueOf(x.get("id")).compareTo(String.valueOf(y.get("id"))));
        return out;
    }

    private void close() {
        for (LeaderLatch l : latches.values()) {
            try {
                l.close();
            } catch (Exception e) {
                // closing anyway
            }
        }
        for (ServiceCache<Object> c : caches.values()) {
            try {
                c.close();
            } catch (Exception e) {
                // closing anyway
            }
        }
        for (ServiceDiscovery<Object> d : discoveries.values()) {
            try {
                d.close();
            } catch (Exception e) {
                // closing anyway
            }
        }
        client.close();
    }

    private static Map<String, Object> mapOf(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }

    private static void event(Map<String, Object> e) {
        try {
            out("event " + JSON.writeValueAsString(e));
        } catch (Exception ex) {
            out("event {\"event\":\"unprintable\"}");
        }
    }

    private static synchronized void out(String line) {
        System.out.println(line);
        System.out.flush();
    }
}
