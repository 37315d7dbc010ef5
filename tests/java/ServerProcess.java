import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc;
import io.github.campaigngrpc.campaign.v1.GetCampaignRequest;
import io.github.campaigngrpc.client.CampaignClient;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

/**
 * `campaign-grpc serve` in a child process, on a port and a database file of its own that
 * stay the same across restarts.
 */
final class ServerProcess implements AutoCloseable {
  /** The token these servers accept, for every customer ("*"), as the dialer's. */
  static final String TOKEN = randomHex(32);

  final String address;
  private final Path dir;
  private final List<String> flags; // more flags of `campaign-grpc serve`
  private Process process;

  ServerProcess(Path dir, String... flags) throws Exception {
    this.dir = dir;
    this.flags = List.of(flags);
    try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      address = "127.0.0.1:" + socket.getLocalPort();
    }
    Files.writeString(dir.resolve("tokens.txt"), sha256(TOKEN) + " *\n");
    start();
  }

  void start() throws Exception {
    String command = System.getenv("CAMPAIGN_GRPC_COMMAND");
    if (command == null || command.isEmpty()) {
      throw new IllegalStateException(
          "set CAMPAIGN_GRPC_COMMAND to the campaign-grpc command (.venv/bin/campaign-grpc)");
    }
    File log = dir.resolve("server.log").toFile();
    List<String> args = new ArrayList<>(List.of(
        command, "serve",
        "--listen", address,
        "--database-url", "sqlite:///" + dir.resolve("campaigns.db"),
        "--auth-tokens", dir.resolve("tokens.txt").toString(),
        "--heartbeat-interval", "0.5",
        "--log-level", "WARNING"));
    args.addAll(flags);
    process = new ProcessBuilder(args)
        .redirectErrorStream(true)
        .redirectOutput(ProcessBuilder.Redirect.appendTo(log))
        .start();
    waitServing();
  }

  /** A channel to a server on loopback, with the retry policy; every call carries the token. */
  static ManagedChannel channel(String address, String token) {
    return CampaignClient.channelBuilder(address)
        .usePlaintext()
        .intercept(CampaignClient.bearerToken(token))
        .build();
  }

  /** Waits until a call is answered (NOT_FOUND for a campaign that does not exist). */
  private void waitServing() throws Exception {
    ManagedChannel channel = channel(address, TOKEN);
    try {
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
      while (System.nanoTime() < deadline) {
        if (!process.isAlive()) {
          throw new IllegalStateException("the server exited early:\n" + log());
        }
        try {
          CampaignServiceGrpc.newBlockingStub(channel)
              .withDeadlineAfter(1, TimeUnit.SECONDS)
              .getCampaign(GetCampaignRequest.newBuilder()
                  .setCustomerId(UUID.randomUUID().toString())
                  .setId(UUID.randomUUID().toString())
                  .build());
        } catch (StatusRuntimeException e) {
          if (e.getStatus().getCode() == Status.Code.NOT_FOUND) {
            return;
          }
        }
        Thread.sleep(50);
      }
      throw new IllegalStateException(address + " not serving within 30 s:\n" + log());
    } finally {
      channel.shutdownNow();
    }
  }

  /** Stops the server as an orchestrator does, with SIGTERM, and waits for its clean exit. */
  void terminate() throws Exception {
    process.destroy(); // SIGTERM
    if (!process.waitFor(30, TimeUnit.SECONDS)) {
      throw new AssertionError("the server did not exit within 30 s of SIGTERM:\n" + log());
    }
    if (process.exitValue() != 0) {
      throw new AssertionError("the server exited with " + process.exitValue() + ":\n" + log());
    }
  }

  /** Sends the server a signal (STOP, CONT). */
  void signal(String name) throws Exception {
    Process kill = new ProcessBuilder("kill", "-" + name, Long.toString(process.pid())).start();
    if (kill.waitFor() != 0) {
      throw new IllegalStateException("kill -" + name + " failed");
    }
  }

  String log() {
    try {
      return Files.readString(dir.resolve("server.log"));
    } catch (IOException e) {
      return "(no log: " + e + ")";
    }
  }

  @Override
  public void close() throws InterruptedException {
    if (process != null && process.isAlive()) {
      process.destroyForcibly();
      process.waitFor(10, TimeUnit.SECONDS);
    }
  }

  static String randomHex(int bytes) {
    byte[] random = new byte[bytes];
    new SecureRandom().nextBytes(random);
    return HexFormat.of().formatHex(random);
  }

  static String sha256(String text) throws NoSuchAlgorithmException {
    return HexFormat.of().formatHex(
        MessageDigest.getInstance("SHA-256").digest(text.getBytes(StandardCharsets.UTF_8)));
  }
}
