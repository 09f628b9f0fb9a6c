// The official socket.io client against relais, over one transport (argv[2]: websocket|polling).
// Reads BASE, DOCTOR_TOKEN, PATIENT_TOKEN, PATIENT_ID, CONVERSATION_ID from the environment,
// prints one JSON line with what it saw, exits non-zero on any failure. Bounded: 15 s.
import { io } from "socket.io-client";

const transport = process.argv[2];
const { BASE, DOCTOR_TOKEN, PATIENT_TOKEN, PATIENT_ID, CONVERSATION_ID } = process.env;
const conversationId = Number(CONVERSATION_ID);
const timer = setTimeout(() => fail("timed out"), 15000);

function fail(why) {
  console.log(JSON.stringify({ ok: false, transport, error: String(why) }));
  process.exit(1);
}

function connect(auth) {
  return io(BASE, { transports: [transport], auth, reconnection: false, forceNew: true, timeout: 5000 });
}

function once(socket, event) {
  return new Promise((resolve) => socket.once(event, resolve));
}

async function main() {
  // A bad token: refused with a reason.
  const bad = connect({ token: "not-a-token", userType: "patient", userId: Number(PATIENT_ID), role: "patient" });
  const refusal = await once(bad, "connect_error");
  bad.close();
  if (!/authentication failed/.test(refusal.message)) fail(`unexpected refusal: ${refusal.message}`);

  // A good one.
  const patient = connect({ token: PATIENT_TOKEN, userType: "patient", userId: Number(PATIENT_ID), role: "patient" });
  await Promise.race([once(patient, "connect"), once(patient, "connect_error").then((e) => fail(e.message))]);
  const usedTransport = patient.io.engine.transport.name;

  const ack = await patient.timeout(5000).emitWithAck("join_conversation", {
    conversationId,
    user: { userId: Number(PATIENT_ID), userType: "patient", role: "patient" },
  });
  if (!ack.success) fail(`join failed: ${JSON.stringify(ack)}`);

  const received = once(patient, "new_message");
  const text = `bonjour via ${transport}`;
  const res = await fetch(`${BASE}/api/messaging/conversations/${conversationId}/messages`, {
    method: "POST",
    headers: { Authorization: `Bearer ${DOCTOR_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ contenu: text, type_message: "texte" }),
  });
  if (res.status !== 201) fail(`send answered ${res.status}`);
  const message = await received;
  if (message.contenu !== text || message.conversation_id !== conversationId || !message.sender?.nom) {
    fail(`unexpected message ${JSON.stringify(message)}`);
  }
  patient.close();
  clearTimeout(timer);
  console.log(JSON.stringify({ ok: true, transport, usedTransport, refusal: refusal.message, message }));
  process.exit(0);
}

main().catch(fail);
