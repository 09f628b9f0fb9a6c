//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    admission, attachments, audit, conversations, messages, nodes, ops, precall, recordings, web,
    webrtc,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "relais", description = "Telemedicine consultations: messaging, WebRTC sessions through an SFU, recording."),
    paths(
        conversations::create, conversations::list, conversations::get, conversations::mark_read,
        messages::history, messages::send,
        attachments::upload, attachments::download,
        webrtc::create, webrtc::get, webrtc::end, webrtc::stats, webrtc::validate_code,
        webrtc::ice_servers,
        admission::waiting, admission::admit, admission::decline, admission::remove,
        admission::settings, admission::invite, admission::guests, admission::revoke,
        admission::guest_token,
        precall::plan, precall::start, precall::answer, precall::stats, precall::close,
        recordings::start, recordings::stop, recordings::stop_by_post, recordings::list,
        recordings::download,
        ops::healthz, ops::readyz, ops::metrics, web::dev_token, web::dev_mode, nodes::list,
        audit::list,
        document,
    ),
    components(schemas(
        conversations::CreateConversationBody, conversations::ParticipantInput, conversations::MarkReadBody,
        crate::messaging::views::SendMessageBody,
        webrtc::CreateSessionBody, webrtc::ValidateCodeBody,
        admission::ParticipantBody, admission::SessionSettingsBody, admission::InviteGuestBody,
        admission::GuestTokenBody, admission::GuestView, crate::sfu::WaitingView,
        precall::CheckOfferBody, precall::CheckAnswerBody,
        recordings::StartRecordingBody, web::DevTokenBody,
        crate::turn::IceServer,
        crate::messaging::views::MessageView, crate::messaging::views::AttachmentView,
        crate::messaging::views::ConversationView, crate::messaging::views::PersonView,
        crate::messaging::views::SenderView,
        crate::cluster::directory::NodeInfo, crate::cluster::directory::NodeLoad,
        crate::cluster::directory::MediaAddrs,
        audit::AuditPageData, audit::AuditRecordView, audit::AuditActorView,
        audit::AuditTargetView,
        super::error::ErrorBody,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api-docs/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
