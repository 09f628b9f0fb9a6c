/** Plain-language (French) messages for the codes the server and the browser give. */

const MESSAGES: Record<string, string> = {
  invalid_code:
    "Ce code d'accès n'est pas valide. Vérifiez le lien envoyé par votre médecin, ou demandez-lui un nouveau lien.",
  expired_code: 'Ce lien de consultation a expiré. Demandez un nouveau lien à votre médecin.',
  session_ended: 'Cette consultation est terminée.',
  session_not_found: "Cette consultation n'existe pas. Vérifiez le lien reçu.",
  too_many_attempts:
    'Trop de tentatives avec un code erroné. Patientez une minute avant de réessayer.',
  forbidden: "Vous n'avez pas accès à cette consultation.",
  initiator_mismatch: "Vous n'avez pas accès à cette consultation.",
  doctor_only: 'Seul un médecin peut démarrer une consultation vidéo.',
  not_in_session: "Vous ne participez pas (ou plus) à cette consultation.",
  permission_denied:
    "L'accès à la caméra ou au micro a été refusé. Autorisez-le dans les réglages du navigateur (icône à gauche de l'adresse), puis réessayez.",
  no_device: "Aucune caméra ou aucun micro n'a été trouvé sur cet appareil.",
  device_busy:
    'La caméra ou le micro est déjà utilisé par une autre application. Fermez-la, puis réessayez.',
  insecure_context:
    "La caméra n'est disponible que sur une page sécurisée (https). Ouvrez le lien https envoyé par votre médecin.",
  connection_lost:
    "La connexion a été perdue et n'a pas pu être rétablie. Vérifiez votre connexion Internet, puis réessayez.",
  unreachable: 'Le serveur de consultation est injoignable. Vérifiez votre connexion Internet.',
  refused: 'Votre session a expiré ou n’est pas valide. Reconnectez-vous.',
  timeout: 'Le serveur ne répond pas. Nouvelle tentative…',
  bad_link: "Ce lien de consultation est incomplet : il manque le numéro de consultation ou le code d'accès.",
  consent_required:
    "L'enregistrement demande le consentement des participants : cochez la case pour le confirmer.",
  already_recording: 'La consultation est déjà en cours d’enregistrement.',
  not_recording: "La consultation n'est pas en cours d'enregistrement.",
  session_not_live: "Personne n'est encore connecté à cette consultation : rien à enregistrer.",
  recording_in_progress: "Cet enregistrement n'est pas terminé : arrêtez-le d'abord.",
  declined: "Le médecin n'a pas accepté votre demande de participation à cette consultation.",
  removed: 'Vous avez été retiré de la consultation par le médecin.',
  not_waiting: "Cette personne n'est plus dans la salle d'attente.",
  guest_code_used:
    "Ce lien d'invitation a déjà été utilisé. Il ne sert qu'une fois : demandez un nouveau lien au médecin.",
  guest_expired:
    "Ce lien d'invitation a expiré. Demandez un nouveau lien au médecin.",
  guest_invalid:
    "Ce lien d'invitation n'est pas valide. Vérifiez qu'il est complet, ou demandez un nouveau lien au médecin.",
};

export function describe(code: string, fallback?: string): string {
  return MESSAGES[code] ?? fallback ?? 'Une erreur est survenue. Réessayez dans un instant.';
}

/** Codes after which retrying cannot help: the call stops and says why. */
export const FATAL_CODES = new Set([
  'invalid_code',
  'expired_code',
  'session_ended',
  'session_not_found',
  'too_many_attempts',
  'forbidden',
  'initiator_mismatch',
  'doctor_only',
  'refused',
  'invalid_payload',
  'declined',
  'removed',
]);

/** A getUserMedia failure as one of our codes. */
export function mediaErrorCode(e: unknown): string {
  const name = (e as { name?: string } | null)?.name ?? '';
  switch (name) {
    case 'NotAllowedError':
    case 'PermissionDeniedError':
    case 'SecurityError':
      return 'permission_denied';
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
      return 'no_device';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'device_busy';
    default:
      return 'permission_denied';
  }
}
