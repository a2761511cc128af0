package neo4jlauncher;

import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.io.ByteUnit;

/**
 * Runs Neo4j Community embedded, reachable only through Bolt on loopback.
 *
 * <p>Why: the project needs a real Neo4j for development and CI, but the machines have no Docker
 * and can only reach Maven Central, so the server is assembled from the Maven artifacts instead of
 * the official tarball/image. Started and stopped by {@code scripts/neo4j-up.sh} / {@code
 * scripts/neo4j-down.sh}, which wait for the ready line printed below.
 *
 * <p>Usage: {@code java -Xmx2g -cp 'target/classes:target/lib/*' neo4jlauncher.Neo4jServer [home]}
 *
 * <ul>
 *   <li>home: first argument, else {@code $NEO4J_DATA_DIR}, else {@code .services/neo4j} (relative
 *       to the working directory; the scripts run from the repo root). Store in {@code
 *       home/data}, Neo4j's own logs in {@code home/logs}.
 *   <li>{@code NEO4J_BOLT_PORT} (default 7687), bound to 127.0.0.1 only; no auth, no TLS, no HTTP.
 *   <li>{@code NEO4J_PAGECACHE} (default {@code 1g}). Heap comes from {@code -Xmx}; transaction
 *       memory is capped relative to it so one huge transaction fails cleanly instead of OOMing.
 * </ul>
 */
public final class Neo4jServer {

    public static void main(String[] args) throws InterruptedException {
        Path home = Path.of(args.length > 0 ? args[0] : env("NEO4J_DATA_DIR", ".services/neo4j"))
                .toAbsolutePath();
        int port = Integer.parseInt(env("NEO4J_BOLT_PORT", "7687"));
        long pageCache = ByteUnit.parse(env("NEO4J_PAGECACHE", "1g"));
        long heap = Runtime.getRuntime().maxMemory();

        DatabaseManagementService dbms = new DatabaseManagementServiceBuilder(home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, false)
                .setConfig(GraphDatabaseSettings.udc_enabled, false) // no phoning home
                .setConfig(GraphDatabaseSettings.pagecache_memory, pageCache)
                // All transactions together may use 60% of the heap, a single one 40%.
                .setConfig(GraphDatabaseSettings.memory_transaction_global_max_size, heap * 6 / 10)
                .setConfig(GraphDatabaseSettings.memory_transaction_max_size, heap * 4 / 10)
                // Dev/test store: don't let transaction logs pile up for days.
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "2 files")
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("neo4j-server: shutting down");
            dbms.shutdown();
            System.out.println("neo4j-server: stopped");
            stopped.countDown();
        }, "neo4j-shutdown"));

        GraphDatabaseService db = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
        while (!db.isAvailable(1_000)) {
            System.out.println("neo4j-server: waiting for default database...");
        }
        System.out.printf("neo4j-server: ready bolt://127.0.0.1:%d (home %s, heap %dm, pagecache %dm)%n",
                port, home, heap >> 20, pageCache >> 20);
        stopped.await(); // SIGTERM/SIGINT -> shutdown hook -> JVM exits
    }

    private static String env(String name, String fallback) {
        String v = System.getenv(name);
        return v == null || v.isBlank() ? fallback : v;
    }
}
