#![no_main]
use drosera_sensor::config::MqttSection;
use drosera_sensor::protocols::mqtt;
use libfuzzer_sys::fuzz_target;

// A client's packets: the remaining-length varint (capped), CONNECT, SUBSCRIBE, UNSUBSCRIBE and
// PUBLISH bodies at MQTT 3.1.1 and 5.
fuzz_target!(|data: &[u8]| {
    let caps = MqttSection::default();
    if let Ok(Some((len, used))) = mqtt::remaining_length(data, caps.max_packet_bytes) {
        assert!(len <= caps.max_packet_bytes && (1..=4).contains(&used));
    }
    let _ = mqtt::parse_connect(data);
    for level in [4, 5] {
        if let Ok(sub) = mqtt::parse_subscribe(data, level, caps.max_topics) {
            assert!(sub.topics.len() <= caps.max_topics && sub.topics.len() <= sub.count);
        }
        let _ = mqtt::parse_unsubscribe(data, level);
        let _ = mqtt::parse_publish(data.first().copied().unwrap_or(0) & 0x0f, data, level);
    }
});
