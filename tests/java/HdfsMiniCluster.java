// HDFS for the tests: a NameNode and one DataNode (Hadoop's MiniDFSCluster) in this JVM, on
// 127.0.0.1 and free ports, storing under DIR. Run as a single-file program:
//
//   java -Xmx512m -cp "$STRATA_TOOLS/hadoop-minicluster-3.5.0/*" tests/java/HdfsMiniCluster.java DIR
//
// When the cluster is up (the DataNode registered, safe mode left) it prints one line,
// "hdfs: namenode hdfs://127.0.0.1:PORT", and serves until it is killed, or until its
// standard input closes (so it never outlives a test that dies).

import java.io.File;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public class HdfsMiniCluster {
    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: HdfsMiniCluster DIR");
            System.exit(2);
        }
        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, new File(args[0]).getAbsolutePath());
        // Loopback only, and the DataNode known by its IP address (what a client connects to).
        conf.set(DFSConfigKeys.DFS_DATANODE_ADDRESS_KEY, "127.0.0.1:0");
        conf.set(DFSConfigKeys.DFS_DATANODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
        conf.set(DFSConfigKeys.DFS_DATANODE_IPC_ADDRESS_KEY, "127.0.0.1:0");
        conf.set(DFSConfigKeys.DFS_NAMENODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
        conf.setBoolean(DFSConfigKeys.DFS_CLIENT_USE_DN_HOSTNAME, false);
        conf.setInt(DFSConfigKeys.DFS_REPLICATION_KEY, 1);
        // Permissions as a shared test filesystem: any user may write.
        conf.setBoolean(DFSConfigKeys.DFS_PERMISSIONS_ENABLED_KEY, false);
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
            .nameNodePort(0)
            .numDataNodes(1)
            .format(true)
            .build();
        cluster.waitActive();
        Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown));
        System.out.println("hdfs: namenode hdfs://127.0.0.1:" + cluster.getNameNodePort());
        System.out.flush();
        while (System.in.read() != -1) {
            // Serve until standard input closes.
        }
        cluster.shutdown();
        System.exit(0);
    }
}
